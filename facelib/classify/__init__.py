"""Classification: k-subset aggregation, protocols (splits), models, training loops, one experiment (task ×
protocol × input × model), the study plan and result files."""
