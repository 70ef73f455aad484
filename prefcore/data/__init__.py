"""prefcore/data"""
