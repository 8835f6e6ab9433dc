"""The JSON API at ``/api/v1/``: the pages' actions for programs, under the same roles and audit.

Every endpoint calls the very services and selectors the pages call; what is
here is parsing, authorising and shaping JSON.
"""
