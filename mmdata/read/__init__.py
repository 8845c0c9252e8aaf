"""Reading: a built dataset (`dataset`), views and mixtures (`view`; `open_any` opens whichever a folder holds), a
pandas frame of records (`frame`) and the training loader (`loader`). Never imports the build layer."""
