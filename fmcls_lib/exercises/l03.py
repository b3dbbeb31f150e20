"""Lesson 03 exercises (to be written)."""
