"""Pipeline stages: each reads and writes a job directory (``s3edit.job``)."""
