"""Applications built on the engine: method comparisons, the teacher-output cache, paper 3's grid, detection."""
