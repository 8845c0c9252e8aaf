"""Reading: the shape every dataset-like object shares and selections of them (`records`), a built dataset
(`dataset`), views and mixtures (`view`; `open_any` opens whichever a folder holds), a pandas frame of records
(`frame`) and the training loader (`loader`). Never imports the build layer, and never asks whether a location is
local or a URL: what differs is the storage layer's."""
