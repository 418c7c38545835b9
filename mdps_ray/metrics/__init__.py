"""Metrics: exact functional forms (scikit-learn/scipy) and mergeable states for reductions."""
