"""Lesson 05 exercises (to be written)."""
