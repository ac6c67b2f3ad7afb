/// The API's OpenAPI 3.1 description, served at /api/v1/openapi.json. Docs/openapi.json is the
/// same text (`cordon-server openapi > Docs/openapi.json`; a test holds them equal).
public enum OpenAPIDocument {
    public static let json = #"""
{
  "components": {
    "schemas": {
      "AgentReport": {
        "properties": {
          "applied": {
            "oneOf": [
              {
                "type": "null"
              },
              {
                "properties": {
                  "error": {
                    "pattern": "^[^\\u0000]*$",
                    "type": [
                      "string",
                      "null"
                    ]
                  },
                  "generation": {
                    "maximum": 9223372036854775807,
                    "minimum": 0,
                    "type": "integer"
                  },
                  "ok": {
                    "type": "boolean"
                  }
                },
                "required": [
                  "generation",
                  "ok"
                ],
                "type": "object"
              }
            ]
          },
          "applied_generation": {
            "maximum": 9223372036854775807,
            "minimum": 0,
            "type": "integer"
          },
          "flows": {
            "items": {
              "$ref": "#/components/schemas/FlowUpload"
            },
            "maxItems": 5000,
            "type": "array"
          },
          "local": {
            "oneOf": [
              {
                "type": "null"
              },
              {
                "properties": {
                  "at": {
                    "description": "Unix seconds",
                    "maximum": 253402300799,
                    "minimum": 0,
                    "type": "integer"
                  },
                  "operator": {
                    "maxLength": 200,
                    "pattern": "^[^\\u0000]*$",
                    "type": "string"
                  },
                  "reason": {
                    "maxLength": 1000,
                    "pattern": "^[^\\u0000]*$",
                    "type": "string"
                  },
                  "sequence": {
                    "description": "the decision-log sequence of the isolate or release that made this change: a report sent again with the same sequence and state is the same change (agents before 0.3.0 omit it)",
                    "maximum": 9223372036854775807,
                    "minimum": 1,
                    "type": [
                      "integer",
                      "null"
                    ]
                  },
                  "state": {
                    "enum": [
                      "isolated",
                      "released"
                    ],
                    "type": "string"
                  }
                },
                "required": [
                  "state",
                  "operator",
                  "reason",
                  "at"
                ],
                "type": "object"
              }
            ]
          },
          "log": {
            "items": {
              "$ref": "#/components/schemas/Decision"
            },
            "maxItems": 1000,
            "type": "array"
          },
          "observed": {
            "enum": [
              "isolated",
              "released"
            ],
            "type": "string"
          },
          "status": {
            "description": "the agent's state as `cordon status` reports it",
            "properties": {
              "addresses": {
                "items": {
                  "anyOf": [
                    {
                      "format": "ipv4"
                    },
                    {
                      "format": "ipv6"
                    }
                  ],
                  "type": "string"
                },
                "maxItems": 64,
                "type": "array"
              },
              "agent_version": {
                "maxLength": 64,
                "pattern": "^[^\\u0000]*$",
                "type": "string"
              },
              "flows": {
                "maximum": 9223372036854775807,
                "minimum": -9223372036854775808,
                "type": "integer"
              },
              "guard_escalations": {
                "maximum": 18446744073709551615,
                "minimum": 0,
                "type": "integer"
              },
              "guard_restores": {
                "maximum": 18446744073709551615,
                "minimum": 0,
                "type": "integer"
              },
              "isolated": {
                "type": "boolean"
              },
              "lost_events": {
                "maximum": 18446744073709551615,
                "minimum": 0,
                "type": "integer"
              },
              "mode": {
                "enum": [
                  "discovery",
                  "enforce"
                ],
                "type": "string"
              },
              "ruleset_digest": {
                "maxLength": 128,
                "pattern": "^[^\\u0000]*$",
                "type": [
                  "string",
                  "null"
                ]
              },
              "ruleset_version": {
                "maximum": 9223372036854775807,
                "minimum": -9223372036854775808,
                "type": [
                  "integer",
                  "null"
                ]
              }
            },
            "required": [
              "mode",
              "isolated",
              "lost_events",
              "guard_restores",
              "guard_escalations",
              "flows",
              "agent_version",
              "addresses"
            ],
            "type": "object"
          }
        },
        "required": [
          "status",
          "observed",
          "applied_generation",
          "log",
          "flows"
        ],
        "type": "object"
      },
      "AuditEntry": {
        "properties": {
          "action": {
            "type": "string"
          },
          "actor": {
            "type": "string"
          },
          "at": {
            "format": "date-time",
            "type": "string"
          },
          "detail": {
            "type": "string"
          },
          "id": {
            "type": "integer"
          },
          "remote": {
            "type": [
              "string",
              "null"
            ]
          },
          "role": {
            "type": [
              "string",
              "null"
            ]
          },
          "target": {
            "type": [
              "string",
              "null"
            ]
          }
        },
        "required": [
          "id",
          "at",
          "actor",
          "action",
          "detail"
        ],
        "type": "object"
      },
      "Decision": {
        "properties": {
          "action": {
            "pattern": "^[^\\u0000]*$",
            "type": "string"
          },
          "applied_at": {
            "description": "Unix seconds",
            "maximum": 9223372036854775807,
            "minimum": -9223372036854775808,
            "type": "integer"
          },
          "backend": {
            "pattern": "^[^\\u0000]*$",
            "type": "string"
          },
          "hash": {
            "pattern": "^[^\\u0000]*$",
            "type": "string"
          },
          "hash_format": {
            "maximum": 9223372036854775807,
            "minimum": -9223372036854775808,
            "type": "integer"
          },
          "id": {
            "pattern": "^[^\\u0000]*$",
            "type": "string"
          },
          "management_whitelist": {
            "items": {
              "properties": {
                "address": {
                  "pattern": "^[^\\u0000]*$",
                  "type": "string"
                },
                "port": {
                  "maximum": 65535,
                  "minimum": 0,
                  "type": [
                    "integer",
                    "null"
                  ]
                },
                "protocol": {
                  "pattern": "^[^\\u0000]*$",
                  "type": "string"
                }
              },
              "required": [
                "protocol",
                "address"
              ],
              "type": "object"
            },
            "type": "array"
          },
          "operator": {
            "pattern": "^[^\\u0000]*$",
            "type": "string"
          },
          "outcome": {
            "pattern": "^[^\\u0000]*$",
            "type": "string"
          },
          "policy": {
            "pattern": "^[^\\u0000]*$",
            "type": "string"
          },
          "policy_digest": {
            "pattern": "^[^\\u0000]*$",
            "type": "string"
          },
          "previous_hash": {
            "pattern": "^[^\\u0000]*$",
            "type": "string"
          },
          "reason": {
            "pattern": "^[^\\u0000]*$",
            "type": "string"
          },
          "sequence": {
            "maximum": 9223372036854775807,
            "minimum": 1,
            "type": "integer"
          },
          "whitelist": {
            "pattern": "^[^\\u0000]*$",
            "type": "string"
          }
        },
        "required": [
          "sequence",
          "id",
          "action",
          "operator",
          "reason",
          "backend",
          "policy",
          "policy_digest",
          "management_whitelist",
          "whitelist",
          "applied_at",
          "outcome",
          "previous_hash",
          "hash",
          "hash_format"
        ],
        "type": "object"
      },
      "DesiredIsolation": {
        "properties": {
          "generation": {
            "type": "integer"
          },
          "intent_id": {
            "type": [
              "string",
              "null"
            ]
          },
          "reason": {
            "type": "string"
          },
          "requested_by": {
            "type": "string"
          },
          "state": {
            "enum": [
              "isolated",
              "released"
            ],
            "type": "string"
          }
        },
        "required": [
          "generation",
          "state",
          "reason",
          "requested_by"
        ],
        "type": "object"
      },
      "EnrollRequest": {
        "properties": {
          "addresses": {
            "items": {
              "anyOf": [
                {
                  "format": "ipv4"
                },
                {
                  "format": "ipv6"
                }
              ],
              "type": "string"
            },
            "maxItems": 64,
            "type": "array"
          },
          "agent_version": {
            "maxLength": 64,
            "pattern": "^[^\\u0000]*$",
            "type": "string"
          },
          "hostname": {
            "maxLength": 253,
            "minLength": 1,
            "pattern": "^[^\\u0000]*$",
            "type": "string"
          },
          "machine_id": {
            "maxLength": 128,
            "pattern": "^[^\\u0000]*$",
            "type": "string"
          },
          "secret": {
            "maxLength": 256,
            "minLength": 1,
            "pattern": "^[^\\u0000]*$",
            "type": "string"
          },
          "tags": {
            "additionalProperties": {
              "maxLength": 255,
              "minLength": 1,
              "pattern": "^[^\\u0000]*$",
              "type": "string"
            },
            "maxProperties": 32,
            "propertyNames": {
              "pattern": "^[A-Za-z0-9._/-]{1,63}$"
            },
            "type": "object"
          }
        },
        "required": [
          "secret",
          "hostname",
          "machine_id",
          "addresses",
          "agent_version",
          "tags"
        ],
        "type": "object"
      },
      "EnrollResponse": {
        "properties": {
          "credential": {
            "description": "the host's bearer credential, shown once",
            "type": "string"
          },
          "host_id": {
            "format": "uuid",
            "type": "string"
          }
        },
        "required": [
          "host_id",
          "credential"
        ],
        "type": "object"
      },
      "Error": {
        "properties": {
          "error": {
            "type": "string"
          },
          "field": {
            "type": [
              "string",
              "null"
            ]
          }
        },
        "required": [
          "error"
        ],
        "type": "object"
      },
      "Flow": {
        "description": "the fields of `cordon flows --json` (which writes the null ones too; an upload may leave them out); what the server stores meets these bounds",
        "properties": {
          "bytes": {
            "maximum": 18446744073709551615,
            "minimum": 0,
            "type": "integer"
          },
          "connections": {
            "maximum": 18446744073709551615,
            "minimum": 0,
            "type": "integer"
          },
          "direction": {
            "enum": [
              "inbound",
              "outbound",
              "forward"
            ],
            "type": "string"
          },
          "family": {
            "enum": [
              "ipv4",
              "ipv6"
            ],
            "type": "string"
          },
          "first_seen": {
            "description": "RFC 3339 UTC, between 2000 and a day past the server's clock; first_seen <= last_seen",
            "format": "date-time",
            "type": "string"
          },
          "icmp_code": {
            "maximum": 255,
            "minimum": 0,
            "type": [
              "integer",
              "null"
            ]
          },
          "icmp_type": {
            "maximum": 255,
            "minimum": 0,
            "type": [
              "integer",
              "null"
            ]
          },
          "last_seen": {
            "description": "RFC 3339 UTC, between 2000 and a day past the server's clock; first_seen <= last_seen",
            "format": "date-time",
            "type": "string"
          },
          "local_address": {
            "anyOf": [
              {
                "format": "ipv4"
              },
              {
                "format": "ipv6"
              }
            ],
            "type": "string"
          },
          "local_port": {
            "maximum": 65535,
            "minimum": 0,
            "type": [
              "integer",
              "null"
            ]
          },
          "packets": {
            "maximum": 18446744073709551615,
            "minimum": 0,
            "type": "integer"
          },
          "protocol": {
            "maxLength": 16,
            "minLength": 1,
            "pattern": "^([a-z0-9]+)$",
            "type": "string"
          },
          "remote_address": {
            "description": "an address, or a prefix where the agent rolled many remotes up",
            "maxLength": 49,
            "pattern": "^[^\\u0000]*$",
            "type": "string"
          },
          "remote_names": {
            "description": "Names whose DNS answer gave this remote to a connection of the flow, most recent first (absent from agents before names).",
            "items": {
              "maxLength": 253,
              "pattern": "^([A-Za-z0-9_-]{1,63})(\\.[A-Za-z0-9_-]{1,63})*\\.?$",
              "type": "string"
            },
            "maxItems": 16,
            "type": "array"
          },
          "remote_port": {
            "maximum": 65535,
            "minimum": 0,
            "type": [
              "integer",
              "null"
            ]
          },
          "verdict": {
            "enum": [
              "allowed",
              "rejected"
            ],
            "type": "string"
          }
        },
        "required": [
          "direction",
          "protocol",
          "family",
          "local_address",
          "remote_address",
          "connections",
          "packets",
          "bytes",
          "first_seen",
          "last_seen",
          "verdict"
        ],
        "type": "object"
      },
      "FlowUpload": {
        "description": "a flow row as an agent uploads it: the bounds of `Flow` are checked row by row, and a row that breaks one is refused by itself (`refused_flows` in the answer), not the report",
        "properties": {
          "bytes": {
            "maximum": 18446744073709551615,
            "minimum": 0,
            "type": "integer"
          },
          "connections": {
            "maximum": 18446744073709551615,
            "minimum": 0,
            "type": "integer"
          },
          "direction": {
            "enum": [
              "inbound",
              "outbound",
              "forward"
            ],
            "type": "string"
          },
          "family": {
            "enum": [
              "ipv4",
              "ipv6"
            ],
            "type": "string"
          },
          "first_seen": {
            "pattern": "^[^\\u0000]*$",
            "type": "string"
          },
          "icmp_code": {
            "maximum": 255,
            "minimum": 0,
            "type": [
              "integer",
              "null"
            ]
          },
          "icmp_type": {
            "maximum": 255,
            "minimum": 0,
            "type": [
              "integer",
              "null"
            ]
          },
          "last_seen": {
            "pattern": "^[^\\u0000]*$",
            "type": "string"
          },
          "local_address": {
            "pattern": "^[^\\u0000]*$",
            "type": "string"
          },
          "local_port": {
            "maximum": 65535,
            "minimum": 0,
            "type": [
              "integer",
              "null"
            ]
          },
          "packets": {
            "maximum": 18446744073709551615,
            "minimum": 0,
            "type": "integer"
          },
          "protocol": {
            "pattern": "^[^\\u0000]*$",
            "type": "string"
          },
          "remote_address": {
            "pattern": "^[^\\u0000]*$",
            "type": "string"
          },
          "remote_names": {
            "description": "Names whose DNS answer gave this remote to a connection of the flow, most recent first (absent from agents before names).",
            "items": {
              "pattern": "^[^\\u0000]*$",
              "type": "string"
            },
            "type": "array"
          },
          "remote_port": {
            "maximum": 65535,
            "minimum": 0,
            "type": [
              "integer",
              "null"
            ]
          },
          "verdict": {
            "enum": [
              "allowed",
              "rejected"
            ],
            "type": "string"
          }
        },
        "required": [
          "direction",
          "protocol",
          "family",
          "local_address",
          "remote_address",
          "connections",
          "packets",
          "bytes",
          "first_seen",
          "last_seen",
          "verdict"
        ],
        "type": "object"
      },
      "Host": {
        "properties": {
          "addresses": {
            "items": {
              "type": "string"
            },
            "type": "array"
          },
          "agent_version": {
            "type": "string"
          },
          "connected": {
            "type": "boolean"
          },
          "duplicate_machine_id": {
            "description": "another enrolled, unrevoked host gave the same machine id: one of them may be an impostor (or a cloned image)",
            "type": "boolean"
          },
          "enrolled_at": {
            "format": "date-time",
            "type": "string"
          },
          "guard_escalations": {
            "type": "integer"
          },
          "guard_restores": {
            "type": "integer"
          },
          "hostname": {
            "type": "string"
          },
          "id": {
            "format": "uuid",
            "type": "string"
          },
          "isolation": {
            "$ref": "#/components/schemas/Isolation"
          },
          "last_seen": {
            "format": "date-time",
            "type": [
              "string",
              "null"
            ]
          },
          "log_problems": {
            "type": "integer"
          },
          "lost_events": {
            "type": "integer"
          },
          "machine_id": {
            "type": "string"
          },
          "mode": {
            "enum": [
              "discovery",
              "enforce",
              null
            ],
            "type": [
              "string",
              "null"
            ]
          },
          "revoked": {
            "type": "boolean"
          },
          "ruleset": {
            "oneOf": [
              {
                "type": "null"
              },
              {
                "properties": {
                  "digest": {
                    "type": [
                      "string",
                      "null"
                    ]
                  },
                  "version": {
                    "type": "integer"
                  }
                },
                "required": [
                  "version"
                ],
                "type": "object"
              }
            ]
          },
          "tag_sources": {
            "additionalProperties": {
              "enum": [
                "secret",
                "host",
                "admin"
              ],
              "type": "string"
            },
            "description": "where each tag came from: the enrollment secret's (an administrator's choice), the host's own claim, or an admin's",
            "type": "object"
          },
          "tags": {
            "additionalProperties": {
              "type": "string"
            },
            "type": "object"
          }
        },
        "required": [
          "id",
          "hostname",
          "machine_id",
          "tags",
          "addresses",
          "agent_version",
          "enrolled_at",
          "last_seen",
          "connected",
          "revoked",
          "mode",
          "ruleset",
          "lost_events",
          "guard_restores",
          "guard_escalations",
          "log_problems",
          "isolation",
          "tag_sources",
          "duplicate_machine_id"
        ],
        "type": "object"
      },
      "HostLog": {
        "properties": {
          "entries": {
            "items": {
              "$ref": "#/components/schemas/Decision"
            },
            "type": "array"
          },
          "host_id": {
            "format": "uuid",
            "type": "string"
          },
          "verification": {
            "properties": {
              "entries": {
                "type": "integer"
              },
              "intact": {
                "type": "boolean"
              },
              "problems": {
                "items": {
                  "type": "string"
                },
                "type": "array"
              }
            },
            "required": [
              "intact",
              "entries",
              "problems"
            ],
            "type": "object"
          }
        },
        "required": [
          "host_id",
          "verification",
          "entries"
        ],
        "type": "object"
      },
      "Intent": {
        "properties": {
          "completed_at": {
            "format": "date-time",
            "type": [
              "string",
              "null"
            ]
          },
          "error": {
            "type": [
              "string",
              "null"
            ]
          },
          "external_id": {
            "type": [
              "string",
              "null"
            ]
          },
          "generation": {
            "type": "integer"
          },
          "host_id": {
            "format": "uuid",
            "type": "string"
          },
          "id": {
            "format": "uuid",
            "type": "string"
          },
          "reason": {
            "type": "string"
          },
          "requested_at": {
            "format": "date-time",
            "type": "string"
          },
          "requested_by": {
            "type": "string"
          },
          "state": {
            "enum": [
              "isolated",
              "released"
            ],
            "type": "string"
          },
          "status": {
            "$ref": "#/components/schemas/IntentStatus"
          }
        },
        "required": [
          "id",
          "host_id",
          "state",
          "generation",
          "status",
          "requested_by",
          "requested_at",
          "completed_at",
          "reason",
          "external_id",
          "error"
        ],
        "type": "object"
      },
      "IntentAccepted": {
        "properties": {
          "generation": {
            "type": "integer"
          },
          "intent_id": {
            "format": "uuid",
            "type": "string"
          },
          "status": {
            "$ref": "#/components/schemas/IntentStatus"
          }
        },
        "required": [
          "intent_id",
          "generation",
          "status"
        ],
        "type": "object"
      },
      "IntentStatus": {
        "enum": [
          "pending",
          "succeeded",
          "failed",
          "superseded"
        ],
        "type": "string"
      },
      "Isolation": {
        "properties": {
          "desired": {
            "enum": [
              "isolated",
              "released"
            ],
            "type": "string"
          },
          "generation": {
            "type": "integer"
          },
          "observed": {
            "enum": [
              "isolated",
              "released",
              null
            ],
            "type": [
              "string",
              "null"
            ]
          },
          "observed_generation": {
            "type": "integer"
          },
          "pending_since": {
            "format": "date-time",
            "type": [
              "string",
              "null"
            ]
          }
        },
        "required": [
          "desired",
          "observed",
          "generation",
          "observed_generation",
          "pending_since"
        ],
        "type": "object"
      },
      "IsolationRequest": {
        "if": {
          "properties": {
            "state": {
              "const": "isolated"
            }
          },
          "required": [
            "state"
          ]
        },
        "properties": {
          "external_id": {
            "maxLength": 200,
            "pattern": "^[^\\u0000]*$",
            "type": [
              "string",
              "null"
            ]
          },
          "reason": {
            "description": "why; an isolation needs one with a character that is not white space (a release may leave it empty)",
            "maxLength": 1000,
            "pattern": "^[^\\u0000]*$",
            "type": "string"
          },
          "state": {
            "enum": [
              "isolated",
              "released"
            ],
            "type": "string"
          }
        },
        "required": [
          "state",
          "reason"
        ],
        "then": {
          "properties": {
            "reason": {
              "pattern": "\\S"
            }
          }
        },
        "type": "object"
      },
      "Readiness": {
        "properties": {
          "database": {
            "description": "why the database cannot be used now; null when it answers",
            "type": [
              "string",
              "null"
            ]
          },
          "notifications": {
            "description": "why this replica is not listening for desired-state changes; null when it is",
            "type": [
              "string",
              "null"
            ]
          },
          "ready": {
            "type": "boolean"
          }
        },
        "required": [
          "ready",
          "database",
          "notifications"
        ],
        "type": "object"
      },
      "ReportResponse": {
        "properties": {
          "desired": {
            "$ref": "#/components/schemas/DesiredIsolation"
          },
          "log_acked_through": {
            "type": "integer"
          },
          "refused_flows": {
            "description": "flow rows refused and not stored, by index in the report (absent from servers before 0.3.0)",
            "items": {
              "properties": {
                "field": {
                  "type": "string"
                },
                "index": {
                  "minimum": 0,
                  "type": "integer"
                },
                "message": {
                  "type": "string"
                }
              },
              "required": [
                "index",
                "field",
                "message"
              ],
              "type": "object"
            },
            "type": "array"
          }
        },
        "required": [
          "log_acked_through",
          "desired",
          "refused_flows"
        ],
        "type": "object"
      }
    },
    "securitySchemes": {
      "bearer": {
        "description": "an API token (cordon_api_...)",
        "scheme": "bearer",
        "type": "http"
      },
      "host": {
        "description": "a host credential (cordon_host_...)",
        "scheme": "bearer",
        "type": "http"
      }
    }
  },
  "info": {
    "description": "The fleet API of Cordon. JSON over HTTPS; `Authorization: Bearer TOKEN`. API tokens have a role: viewer reads; responder also isolates, releases and cancels; approver and admin include it (admin also reads the audit log). Agents use their own host credential on /agent/v1 only.",
    "title": "cordon-server",
    "version": "1"
  },
  "openapi": "3.1.0",
  "paths": {
    "/agent/v1/desired": {
      "get": {
        "parameters": [
          {
            "in": "query",
            "name": "after",
            "schema": {
              "maximum": 9223372036854775807,
              "minimum": -9223372036854775808,
              "type": "integer"
            }
          },
          {
            "description": "seconds to hold the poll when nothing is newer (at most 25; the server ends it at random in the last fifth)",
            "in": "query",
            "name": "wait",
            "schema": {
              "maximum": 25,
              "minimum": 0,
              "type": "number"
            }
          }
        ],
        "responses": {
          "200": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/DesiredIsolation"
                }
              }
            },
            "description": "the desired state"
          },
          "400": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "bad input (the field is named)"
          },
          "401": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "no token, or not a valid one"
          },
          "403": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "the token's role is too low"
          },
          "503": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "the database is unavailable or did not answer within the server's deadline (--database-timeout, 5 s by default); what was asked may or may not have been done",
            "headers": {
              "Retry-After": {
                "description": "seconds to wait before trying again",
                "schema": {
                  "type": "integer"
                }
              }
            }
          }
        },
        "security": [
          {
            "host": []
          }
        ],
        "summary": "The host's desired isolation; a long poll answered when its generation passes `after`, or after `wait` seconds (at most 25)",
        "tags": [
          "agent"
        ]
      }
    },
    "/agent/v1/enroll": {
      "post": {
        "requestBody": {
          "content": {
            "application/json": {
              "schema": {
                "$ref": "#/components/schemas/EnrollRequest"
              }
            }
          },
          "required": true
        },
        "responses": {
          "201": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/EnrollResponse"
                }
              }
            },
            "description": "enrolled"
          },
          "400": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "bad input (the field is named)"
          },
          "403": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "the token's role is too low"
          },
          "408": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "the body did not arrive within 30 s"
          },
          "422": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "a field's value is not acceptable"
          },
          "503": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "the database is unavailable or did not answer within the server's deadline (--database-timeout, 5 s by default); what was asked may or may not have been done",
            "headers": {
              "Retry-After": {
                "description": "seconds to wait before trying again",
                "schema": {
                  "type": "integer"
                }
              }
            }
          }
        },
        "security": [],
        "summary": "Enroll a host with an enrollment secret",
        "tags": [
          "agent"
        ]
      }
    },
    "/agent/v1/report": {
      "post": {
        "requestBody": {
          "content": {
            "application/json": {
              "schema": {
                "$ref": "#/components/schemas/AgentReport"
              }
            }
          },
          "required": true
        },
        "responses": {
          "200": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/ReportResponse"
                }
              }
            },
            "description": "acknowledged"
          },
          "400": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "bad input (the field is named)"
          },
          "401": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "no token, or not a valid one"
          },
          "403": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "the token's role is too low"
          },
          "408": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "the body did not arrive within 30 s"
          },
          "413": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "too many entries or flows in one report"
          },
          "422": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "a log entry, generation or time out of range"
          },
          "503": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "the database is unavailable or did not answer within the server's deadline (--database-timeout, 5 s by default); what was asked may or may not have been done",
            "headers": {
              "Retry-After": {
                "description": "seconds to wait before trying again",
                "schema": {
                  "type": "integer"
                }
              }
            }
          }
        },
        "security": [
          {
            "host": []
          }
        ],
        "summary": "Status, the isolation observed and applied, decision-log entries and changed flows; idempotent under replay",
        "tags": [
          "agent"
        ]
      }
    },
    "/api/v1/audit": {
      "get": {
        "responses": {
          "200": {
            "content": {
              "application/json": {
                "schema": {
                  "properties": {
                    "items": {
                      "items": {
                        "$ref": "#/components/schemas/AuditEntry"
                      },
                      "type": "array"
                    }
                  },
                  "required": [
                    "items"
                  ],
                  "type": "object"
                }
              }
            },
            "description": "newest first"
          },
          "401": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "no token, or not a valid one"
          },
          "403": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "the token's role is too low"
          },
          "503": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "the database is unavailable or did not answer within the server's deadline (--database-timeout, 5 s by default); what was asked may or may not have been done",
            "headers": {
              "Retry-After": {
                "description": "seconds to wait before trying again",
                "schema": {
                  "type": "integer"
                }
              }
            }
          }
        },
        "security": [
          {
            "bearer": []
          }
        ],
        "summary": "The audit log: every state-changing call, who, what, when, from where (role: admin)",
        "tags": [
          "api"
        ]
      }
    },
    "/api/v1/hosts": {
      "get": {
        "responses": {
          "200": {
            "content": {
              "application/json": {
                "schema": {
                  "properties": {
                    "items": {
                      "items": {
                        "$ref": "#/components/schemas/Host"
                      },
                      "type": "array"
                    }
                  },
                  "required": [
                    "items"
                  ],
                  "type": "object"
                }
              }
            },
            "description": "the hosts"
          },
          "401": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "no token, or not a valid one"
          },
          "403": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "the token's role is too low"
          },
          "503": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "the database is unavailable or did not answer within the server's deadline (--database-timeout, 5 s by default); what was asked may or may not have been done",
            "headers": {
              "Retry-After": {
                "description": "seconds to wait before trying again",
                "schema": {
                  "type": "integer"
                }
              }
            }
          }
        },
        "security": [
          {
            "bearer": []
          }
        ],
        "summary": "Every enrolled host (role: viewer)",
        "tags": [
          "api"
        ]
      }
    },
    "/api/v1/hosts/{id}": {
      "get": {
        "parameters": [
          {
            "in": "path",
            "name": "id",
            "required": true,
            "schema": {
              "format": "uuid",
              "type": "string"
            }
          }
        ],
        "responses": {
          "200": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Host"
                }
              }
            },
            "description": "the host"
          },
          "400": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "bad input (the field is named)"
          },
          "401": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "no token, or not a valid one"
          },
          "403": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "the token's role is too low"
          },
          "404": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "no such host or intent"
          },
          "503": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "the database is unavailable or did not answer within the server's deadline (--database-timeout, 5 s by default); what was asked may or may not have been done",
            "headers": {
              "Retry-After": {
                "description": "seconds to wait before trying again",
                "schema": {
                  "type": "integer"
                }
              }
            }
          }
        },
        "security": [
          {
            "bearer": []
          }
        ],
        "summary": "One host (role: viewer)",
        "tags": [
          "api"
        ]
      }
    },
    "/api/v1/hosts/{id}/flows": {
      "get": {
        "parameters": [
          {
            "in": "path",
            "name": "id",
            "required": true,
            "schema": {
              "format": "uuid",
              "type": "string"
            }
          }
        ],
        "responses": {
          "200": {
            "content": {
              "application/json": {
                "schema": {
                  "items": {
                    "$ref": "#/components/schemas/Flow"
                  },
                  "type": "array"
                }
              }
            },
            "description": "the flows"
          },
          "400": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "bad input (the field is named)"
          },
          "401": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "no token, or not a valid one"
          },
          "403": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "the token's role is too low"
          },
          "404": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "no such host or intent"
          },
          "503": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "the database is unavailable or did not answer within the server's deadline (--database-timeout, 5 s by default); what was asked may or may not have been done",
            "headers": {
              "Retry-After": {
                "description": "seconds to wait before trying again",
                "schema": {
                  "type": "integer"
                }
              }
            }
          }
        },
        "security": [
          {
            "bearer": []
          }
        ],
        "summary": "The host's flow aggregates (role: viewer)",
        "tags": [
          "api"
        ]
      }
    },
    "/api/v1/hosts/{id}/isolation": {
      "post": {
        "parameters": [
          {
            "in": "path",
            "name": "id",
            "required": true,
            "schema": {
              "format": "uuid",
              "type": "string"
            }
          },
          {
            "description": "the same key from the same token answers the same intent",
            "in": "header",
            "name": "Idempotency-Key",
            "required": false,
            "schema": {
              "maxLength": 200,
              "minLength": 1,
              "type": "string"
            }
          }
        ],
        "requestBody": {
          "content": {
            "application/json": {
              "schema": {
                "$ref": "#/components/schemas/IsolationRequest"
              }
            }
          },
          "required": true
        },
        "responses": {
          "202": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/IntentAccepted"
                }
              }
            },
            "description": "accepted"
          },
          "400": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "bad input (the field is named)"
          },
          "401": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "no token, or not a valid one"
          },
          "403": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "the token's role is too low"
          },
          "404": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "no such host or intent"
          },
          "408": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "the body did not arrive within 30 s"
          },
          "409": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "conflict (revoked host, intent not pending)"
          },
          "422": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "a field's value is not acceptable"
          },
          "503": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "the database is unavailable or did not answer within the server's deadline (--database-timeout, 5 s by default); what was asked may or may not have been done",
            "headers": {
              "Retry-After": {
                "description": "seconds to wait before trying again",
                "schema": {
                  "type": "integer"
                }
              }
            }
          }
        },
        "security": [
          {
            "bearer": []
          }
        ],
        "summary": "Set the host's desired isolation: an intent that bumps its generation; a pending one is superseded. Isolating an isolated host answers succeeded at once. (role: responder)",
        "tags": [
          "api"
        ]
      }
    },
    "/api/v1/hosts/{id}/log": {
      "get": {
        "parameters": [
          {
            "in": "path",
            "name": "id",
            "required": true,
            "schema": {
              "format": "uuid",
              "type": "string"
            }
          }
        ],
        "responses": {
          "200": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/HostLog"
                }
              }
            },
            "description": "the log"
          },
          "400": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "bad input (the field is named)"
          },
          "401": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "no token, or not a valid one"
          },
          "403": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "the token's role is too low"
          },
          "404": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "no such host or intent"
          },
          "503": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "the database is unavailable or did not answer within the server's deadline (--database-timeout, 5 s by default); what was asked may or may not have been done",
            "headers": {
              "Retry-After": {
                "description": "seconds to wait before trying again",
                "schema": {
                  "type": "integer"
                }
              }
            }
          }
        },
        "security": [
          {
            "bearer": []
          }
        ],
        "summary": "The host's shipped decision log and the server's check of its hash chain (role: viewer)",
        "tags": [
          "api"
        ]
      }
    },
    "/api/v1/intents": {
      "get": {
        "parameters": [
          {
            "in": "query",
            "name": "host_id",
            "schema": {
              "format": "uuid",
              "type": "string"
            }
          },
          {
            "in": "query",
            "name": "status",
            "schema": {
              "$ref": "#/components/schemas/IntentStatus"
            }
          },
          {
            "in": "query",
            "name": "limit",
            "schema": {
              "maximum": 10000,
              "minimum": 1,
              "type": "integer"
            }
          }
        ],
        "responses": {
          "200": {
            "content": {
              "application/json": {
                "schema": {
                  "properties": {
                    "items": {
                      "items": {
                        "$ref": "#/components/schemas/Intent"
                      },
                      "type": "array"
                    }
                  },
                  "required": [
                    "items"
                  ],
                  "type": "object"
                }
              }
            },
            "description": "the intents"
          },
          "400": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "bad input (the field is named)"
          },
          "401": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "no token, or not a valid one"
          },
          "403": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "the token's role is too low"
          },
          "503": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "the database is unavailable or did not answer within the server's deadline (--database-timeout, 5 s by default); what was asked may or may not have been done",
            "headers": {
              "Retry-After": {
                "description": "seconds to wait before trying again",
                "schema": {
                  "type": "integer"
                }
              }
            }
          }
        },
        "security": [
          {
            "bearer": []
          }
        ],
        "summary": "Intents, newest first (role: viewer)",
        "tags": [
          "api"
        ]
      }
    },
    "/api/v1/intents/{id}": {
      "get": {
        "parameters": [
          {
            "in": "path",
            "name": "id",
            "required": true,
            "schema": {
              "format": "uuid",
              "type": "string"
            }
          }
        ],
        "responses": {
          "200": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Intent"
                }
              }
            },
            "description": "the intent"
          },
          "400": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "bad input (the field is named)"
          },
          "401": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "no token, or not a valid one"
          },
          "403": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "the token's role is too low"
          },
          "404": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "no such host or intent"
          },
          "503": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "the database is unavailable or did not answer within the server's deadline (--database-timeout, 5 s by default); what was asked may or may not have been done",
            "headers": {
              "Retry-After": {
                "description": "seconds to wait before trying again",
                "schema": {
                  "type": "integer"
                }
              }
            }
          }
        },
        "security": [
          {
            "bearer": []
          }
        ],
        "summary": "One intent (role: viewer)",
        "tags": [
          "api"
        ]
      }
    },
    "/api/v1/intents/{id}/cancel": {
      "post": {
        "parameters": [
          {
            "in": "path",
            "name": "id",
            "required": true,
            "schema": {
              "format": "uuid",
              "type": "string"
            }
          }
        ],
        "responses": {
          "200": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Intent"
                }
              }
            },
            "description": "the canceled intent"
          },
          "400": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "bad input (the field is named)"
          },
          "401": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "no token, or not a valid one"
          },
          "403": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "the token's role is too low"
          },
          "404": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "no such host or intent"
          },
          "409": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "conflict (revoked host, intent not pending)"
          },
          "503": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Error"
                }
              }
            },
            "description": "the database is unavailable or did not answer within the server's deadline (--database-timeout, 5 s by default); what was asked may or may not have been done",
            "headers": {
              "Retry-After": {
                "description": "seconds to wait before trying again",
                "schema": {
                  "type": "integer"
                }
              }
            }
          }
        },
        "security": [
          {
            "bearer": []
          }
        ],
        "summary": "Cancel a pending intent: the host's desired state goes back to what it was (a new generation); the intent ends superseded, its error saying who canceled it (role: responder)",
        "tags": [
          "api"
        ]
      }
    },
    "/api/v1/openapi.json": {
      "get": {
        "responses": {
          "200": {
            "content": {
              "application/json": {
                "schema": {
                  "type": "object"
                }
              }
            },
            "description": "OpenAPI 3.1"
          }
        },
        "security": [],
        "summary": "This document",
        "tags": [
          "api"
        ]
      }
    },
    "/healthz": {
      "get": {
        "responses": {
          "200": {
            "content": {
              "application/json": {
                "schema": {
                  "type": "object"
                }
              }
            },
            "description": "serving"
          }
        },
        "security": [],
        "summary": "Liveness, without authentication",
        "tags": [
          "operations"
        ]
      }
    },
    "/readyz": {
      "get": {
        "responses": {
          "200": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Readiness"
                }
              }
            },
            "description": "ready: the database answers and the replica listens for changes"
          },
          "503": {
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Readiness"
                }
              }
            },
            "description": "not ready; the body says why",
            "headers": {
              "Retry-After": {
                "description": "seconds to wait before trying again",
                "schema": {
                  "type": "integer"
                }
              }
            }
          }
        },
        "security": [],
        "summary": "Readiness, without authentication: fails while the database does not answer (a load balancer's check); /healthz is liveness",
        "tags": [
          "operations"
        ]
      }
    }
  }
}
"""#
}
