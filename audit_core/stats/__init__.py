"""Statistics: metrics with their intervals, the learned scorers, the combined rank test,
score-combining attacks and the results.json schema. Imports the plugin, data and base layers."""
