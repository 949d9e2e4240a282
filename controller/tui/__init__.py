"""The Textual UI: app.py (GivreApp), screens/ (one module per screen), widgets/ (shared widgets),
text.py (words several screens show). The only product package that imports textual; bench/ and
tests/ drive it from above with Textual's pilot."""
