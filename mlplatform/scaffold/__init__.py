"""``mlplatform init``: scaffold a pipeline (YAML + drafted expectation suite) from a table.

:mod:`.profile` reads a sample of the table through :mod:`mlplatform.sources` and describes its
columns, :mod:`.guess` proposes the entity, event-time and label columns and the model kind (each
with the reason), :mod:`.suite` drafts a Great Expectations suite from the profile and
:mod:`.pipeline` writes both files. Nothing here imports Great Expectations, TensorFlow or Airflow.
"""
