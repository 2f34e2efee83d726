-- One database each for Prefect and MLflow, owned by the compose user.
CREATE DATABASE prefect;
CREATE DATABASE mlflow;
