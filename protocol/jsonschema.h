/*
 * jsonschema.h - validates a JSON value against a JSON Schema: the subset agentd's tools and
 * structured outputs use (type and type arrays, properties, required, additionalProperties,
 * items, minItems/maxItems, enum, const, anyOf/oneOf, $ref to #, #/$defs/..., #/definitions/...,
 * minLength/maxLength, minimum/maximum/exclusiveMinimum/exclusiveMaximum). Keywords outside it
 * are ignored.
 *
 * Errors name the JSON pointer of the first failing value and why:
 *   "/city: expected string, got number", "/: missing required property \"unit\"",
 *   "/tags/2: not one of the enum values".
 */
#ifndef PROTO_JSONSCHEMA_H
#define PROTO_JSONSCHEMA_H

#include <cjson/cJSON.h>

#include "../base/base.h"

/* 0 when instance is valid for schema; AG_EPARAMS with err set when it is not; AG_EINVAL when
 * the schema itself is malformed (a $ref that does not resolve, nesting over 512 levels). */
int ag_jsonschema_validate(const cJSON *schema, const cJSON *instance, struct ag_err *err);
/* The same from JSON texts (AG_EPARSE when either does not parse). */
int ag_jsonschema_validate_text(const char *schema, const char *instance, struct ag_err *err);

#endif
