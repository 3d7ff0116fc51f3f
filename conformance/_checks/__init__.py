"""The checks of the conformance checklist, one module per group.

This package imports nothing: ``conformance._registry.CHECK_MODULES`` lists
the modules, and ``all_checks()`` imports them (importing one registers its
checks).
"""
