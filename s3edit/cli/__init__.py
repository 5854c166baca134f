"""The command line: ``app.py`` registers the commands and holds the one error
boundary; each command group lives in its own small file here."""
