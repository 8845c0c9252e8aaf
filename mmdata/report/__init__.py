"""Looking at data: the terminal summary and statistics (`summary`), a full re-validation (`validate`), plots
(`plots`), the HTML report (`html`), the Markdown data card (`card`) and exports to other loaders (`export`)."""
