"""Jupyter notebooks: a kernel per session, cells run through jupyter_client, files through nbformat."""
