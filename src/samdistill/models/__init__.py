"""Models: the promptable assembly, teachers, students, preprocessing, and the registry of families."""
