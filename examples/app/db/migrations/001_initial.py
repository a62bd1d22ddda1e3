"""Peewee migrations -- 001_initial.py.

Some examples (model - class or model name)::

    > Model = migrator.orm['table_name']            # Return model in current state by name
    > Model = migrator.ModelClass                   # Return model in current state by name

    > migrator.sql(sql)                             # Run custom SQL
    > migrator.run(func, *args, **kwargs)           # Run python function with the given args
    > migrator.create_model(Model)                  # Create a model (could be used as decorator)
    > migrator.remove_model(model, cascade=True)    # Remove a model
    > migrator.add_fields(model, **fields)          # Add fields (allow_not_null=True skips default)
    > migrator.change_fields(model, **fields)       # Change fields
    > migrator.remove_fields(model, *field_names, cascade=True)
    > migrator.rename_field(model, old_field_name, new_field_name)
    > migrator.rename_table(model, new_table_name)
    > migrator.add_index(model, *col_names, unique=False)
    > migrator.add_not_null(model, *field_names)
    > migrator.add_default(model, field_name, default)
    > migrator.add_constraint(model, name, sql)
    > migrator.drop_index(model, *col_names)
    > migrator.drop_not_null(model, *field_names)
    > migrator.drop_constraints(model, *constraints)

"""

from contextlib import suppress

import peewee as pw
from peewee_migrate import Migrator


with suppress(ImportError):
    import playhouse.postgres_ext as pw_pext


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    """Write your migrations here."""
    from datalayer.migrate.ops import extend

    m = extend(migrator)

    class User(pw.Model):
        id = pw.UUIDField(column_name='users_id', primary_key=True, constraints=[pw.SQL('DEFAULT gen_random_uuid()')])
        email = pw.CharField(max_length=254, column_name='email', unique=True, constraints=[pw.Check('email = lower(email)')])
        password_hash = pw.CharField(max_length=255, column_name='password_hash')
        display_name = pw.CharField(max_length=100, column_name='display_name', null=True)
        role = pw.CharField(max_length=5, column_name='role', constraints=[pw.SQL("DEFAULT 'user'"), pw.Check('"role" IN (\'user\', \'admin\')')], default='user')
        is_active = pw.BooleanField(column_name='is_active', constraints=[pw.SQL('DEFAULT true')], default=True)
        last_login_at = pw_pext.DateTimeTZField(column_name='last_login_at', null=True)
        created_at = pw_pext.DateTimeTZField(column_name='created_at', constraints=[pw.SQL('DEFAULT now()')])
        updated_at = pw_pext.DateTimeTZField(column_name='updated_at', constraints=[pw.SQL('DEFAULT now()')])

        class Meta:
            table_name = 'users'
            legacy_table_names = False

    m.create_model(User)

    class Post(pw.Model):
        posts_id = pw.UUIDField(column_name='posts_id', primary_key=True, constraints=[pw.SQL('DEFAULT gen_random_uuid()')])
        author = pw.ForeignKeyField(model=m.orm['users'], field='id', column_name='users_id', on_delete='CASCADE', backref='+')
        title = pw.CharField(max_length=200, column_name='title')
        body = pw.TextField(column_name='body', default='')
        published_at = pw_pext.DateTimeTZField(column_name='published_at', null=True)
        created_at = pw_pext.DateTimeTZField(column_name='created_at', constraints=[pw.SQL('DEFAULT now()')])
        updated_at = pw_pext.DateTimeTZField(column_name='updated_at', constraints=[pw.SQL('DEFAULT now()')])

        class Meta:
            table_name = 'posts'
            legacy_table_names = False

    m.create_model(Post)

    class RefreshToken(pw.Model):
        id = pw.UUIDField(column_name='refresh_tokens_id', primary_key=True, constraints=[pw.SQL('DEFAULT gen_random_uuid()')])
        user = pw.ForeignKeyField(model=m.orm['users'], field='id', column_name='users_id', on_delete='CASCADE', backref='+')
        token_hash = pw.CharField(max_length=64, column_name='token_hash', unique=True, constraints=[pw.Check("token_hash ~ '^[0-9a-f]{64}$'")])
        family_id = pw.UUIDField(column_name='family_id', index=True)
        expires_at = pw_pext.DateTimeTZField(column_name='expires_at', index=True)
        revoked_at = pw_pext.DateTimeTZField(column_name='revoked_at', null=True)
        replaced_by = pw.ForeignKeyField(model='self', field='id', column_name='replaced_by', null=True, on_delete='SET NULL', backref='+')
        user_agent = pw.CharField(max_length=512, column_name='user_agent', null=True)
        ip = pw.CharField(max_length=45, column_name='ip', null=True)
        created_at = pw_pext.DateTimeTZField(column_name='created_at', constraints=[pw.SQL('DEFAULT now()')])
        updated_at = pw_pext.DateTimeTZField(column_name='updated_at', constraints=[pw.SQL('DEFAULT now()')])

        class Meta:
            table_name = 'refresh_tokens'
            legacy_table_names = False

    m.create_model(RefreshToken)


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    """Write your rollback migrations here."""
    from datalayer.migrate.ops import extend

    m = extend(migrator)

    m.remove_model('refresh_tokens')

    m.remove_model('posts')

    m.remove_model('users')
