"""Studies: seeds x arms trained against one cache (`runner`), the arms and their folders (`arms`),
the statistics (`stats`: mean +- sd, paired t-interval, bootstrap) and the report (`report`).
"""
