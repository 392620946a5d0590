"""What the files say: the migrations on disk, their statements and effects."""
