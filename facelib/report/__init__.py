"""Reports: Tables 1–3, figures and the HTML index of a run."""
