"""spine-study: build cubes, train every variant and fold, predict in the original geometry, and report.

It sits above training and prediction: it may import both, nothing imports it.
"""
