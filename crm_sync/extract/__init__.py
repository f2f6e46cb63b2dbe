"""Reading the source tables (DuckDB over CSV, or SQL through SQLAlchemy)."""
