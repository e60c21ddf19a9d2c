"""mlplatform: the core library of the Airflow-native ML platform.

Importable without Airflow. Each stage's logic lives in :mod:`mlplatform.stages` as plain
functions that read and write by URI; Airflow operators in ``operators/`` are thin wrappers.
"""

__version__ = "0.1.0"
