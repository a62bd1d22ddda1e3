"""A tiny blog: posts written by datalayer's users."""
