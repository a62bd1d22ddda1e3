"""datalayer: the PostgreSQL data layer of an auth-style service, on Peewee."""
