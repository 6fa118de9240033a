"""MkDocs hooks (mkdocs.yml `hooks:`): reference pages generated from the code at build time."""
