"""Lesson 06 exercises (to be written)."""
