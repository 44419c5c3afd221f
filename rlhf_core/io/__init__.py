"""The field's formats: TRL datasets in and out, and the cluster export (a folder another machine
trains from, and the import of what it brings back)."""
