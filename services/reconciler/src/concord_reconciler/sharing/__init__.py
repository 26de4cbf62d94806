"""Email sharing (issue #7): emails go to Salesforce one way, exactly once per org."""
