"""DDL without a database: what ``create_tables()`` runs for a model, and the ALTERs between two.

:mod:`.spec` describes a model as the DDL ``create_tables()`` would run;
:mod:`.alter` turns the difference between two such descriptions into SQL.
"""
