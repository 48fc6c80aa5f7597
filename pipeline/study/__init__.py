"""Studies: seeds x arms, trained against one cache, and their statistics (mean +- sd, paired
differences with their intervals).
"""
