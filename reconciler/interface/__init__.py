"""The shell: typer commands and the text/JSON views of results."""
