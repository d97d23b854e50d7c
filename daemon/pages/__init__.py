"""The web file manager: page handlers, templates context and the preview renderers."""
