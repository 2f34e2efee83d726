"""Features defined once: the same definitions build offline tables (DuckDB) and serve online.

columns.py (stored columns), definitions.py (the ranker's features), store.py (daily tables and
online lookups), stream.py (real-time counts), consistency.py, lineage.py. Import from the module
that defines a name: this package imports nothing, because components/contracts.py reads the
column definitions to declare the feature tables' schemas and the lake imports the contracts.
"""
