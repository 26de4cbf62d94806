-- One database per service: each owns its tables and its Alembic history.
CREATE DATABASE gateway;
CREATE DATABASE reconciler;
CREATE DATABASE mail_connector;
CREATE DATABASE crm_connector;
CREATE DATABASE mapping;
CREATE DATABASE linker;
