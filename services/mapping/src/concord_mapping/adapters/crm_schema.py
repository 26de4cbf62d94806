"""`OrgSchema` over crm-connector's `DescribeObject` (cached there, one call per sObject)."""

from __future__ import annotations

import grpc

from concord.crm.v1 import crm_connector_service_pb2 as crm
from concord.crm.v1 import crm_connector_service_pb2_grpc as crm_grpc
from concord_mapping.domain.describe import FieldDescribe, SObjectDescribe
from concord_mapping.domain.model import OrgSchemaUnavailable

__all__ = ["GrpcOrgSchema", "describe_from_proto"]

# What crm-connector answers for an org it cannot reach (no or broken connection).
_NO_SCHEMA = (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION)


def describe_from_proto(described: crm.ObjectDescription) -> SObjectDescribe:
    fields = {
        f.name: FieldDescribe(
            name=f.name,
            type=f.type,
            length=f.length,
            createable=f.createable,
            updateable=f.updateable,
            picklist_values=tuple(p.value for p in f.picklist_values if p.active),
        )
        for f in described.fields
    }
    return SObjectDescribe(name=described.name, fields=fields, live=True)


class GrpcOrgSchema:
    def __init__(
        self, stub: crm_grpc.CrmConnectorServiceStub, *, timeout_seconds: float = 10.0
    ) -> None:
        self._stub = stub
        self._timeout = timeout_seconds

    async def describe(self, org: str, sobject: str) -> SObjectDescribe:
        request = crm.DescribeObjectRequest(org=f"orgs/{org}", sobject_type=sobject)
        try:
            response = await self._stub.DescribeObject(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as error:
            if error.code() in _NO_SCHEMA:
                raise OrgSchemaUnavailable(
                    f"the table cannot be checked: crm-connector cannot describe {sobject} "
                    f"for org {org} ({error.code().name}: {error.details()})",
                    metadata={"org": org, "sobject": sobject},
                ) from None
            # UNAVAILABLE / DEADLINE_EXCEEDED become DEPENDENCY_UNAVAILABLE in the interceptor.
            raise
        return describe_from_proto(response.object)
