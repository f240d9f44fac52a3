"""Experiments reproducing the papers' figures and tables (python -m jaxcd.experiments.<name>)."""
