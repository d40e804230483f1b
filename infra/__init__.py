"""How to install, start and stop the local services alpha uses (S3, Label Studio, Prefect)."""
