"""Running migrations: replay without a database, the recorder, apply and history."""
