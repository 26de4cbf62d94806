"""Salesforce → Concord in seconds (issue #19): Change Data Capture through the Pub/Sub API,
turned into `concord.crm.changed.<org>` hints; one package per concern, with its own ports."""
