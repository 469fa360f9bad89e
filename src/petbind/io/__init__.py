"""Readers and writers: files in, validated petbind objects out (and back)."""
