"""Generating migrations: models compared with the replayed history, steps as data, files rendered.

As in alembic: :mod:`.api` replays the history and calls the comparison
(:mod:`.compare`, whose :mod:`.planner` goes table by table on its parts:
:mod:`.refusals`, :mod:`.tables`, :mod:`.columns` and :mod:`.casts`, :mod:`.keys`,
:mod:`.indexes`, :mod:`.names`), which yields steps,
each a value (:mod:`.code`) that is applied to the in-memory state by
calling the migrator's method and rendered to the file's text from the same
object (:mod:`.render`); :mod:`.writer` builds the code of models and
fields, :mod:`.split` groups the steps into transactional and
non-transactional files, :mod:`.outcome` holds what generation returns and
raises, :mod:`.upstream` lets ``pw_migrate create --auto`` use it.  Nothing
generated is parsed or executed as text.
"""
