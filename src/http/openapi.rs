//! The OpenAPI 3.0.1 descriptions served on `OPTIONS /` (TorchServe's `OpenApiUtils`), written
//! from the routes this server really has.

use serde_json::{json, Value};

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    })
}

fn status_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Status"}}}
    })
}

fn components() -> Value {
    json!({
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["code", "type", "message"],
                "properties": {
                    "code": {"type": "integer", "description": "HTTP status code."},
                    "type": {"type": "string", "description": "Error type."},
                    "message": {"type": "string", "description": "Error message."}
                }
            },
            "Status": {
                "type": "object",
                "required": ["status"],
                "properties": {"status": {"type": "string", "description": "What happened."}}
            }
        }
    })
}

fn path_parameter(name: &str, description: &str) -> Value {
    json!({"in": "path", "name": name, "required": true, "description": description, "schema": {"type": "string"}})
}

fn query_parameter(name: &str, kind: &str, description: &str) -> Value {
    json!({"in": "query", "name": name, "required": false, "description": description, "schema": {"type": kind}})
}

fn info(title: &str) -> Value {
    json!({"title": title, "description": "oxserve: a TorchServe-compatible model server on ONNX Runtime.", "version": env!("CARGO_PKG_VERSION")})
}

/// An operation with its parameters added.
fn operation(mut body: Value, parameters: Vec<Value>) -> Value {
    body["parameters"] = Value::Array(parameters);
    body
}

fn describe_self() -> Value {
    json!({"options": {
        "operationId": "apiDescription",
        "description": "This description.",
        "responses": {"200": {"description": "An OpenAPI 3.0.1 document.", "content": {"application/json": {"schema": {"type": "object"}}}}}
    }})
}

/// The inference API (port 8080).
pub fn inference() -> Value {
    let predict = json!({
        "description": "Runs a prediction. The body is the raw input (an image, JSON tensors) or multipart/form-data with one `data` part per input; several inputs are answered as a JSON list.",
        "requestBody": {
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                "multipart/form-data": {"schema": {"type": "object", "properties": {"data": {"type": "string", "format": "binary"}}}}
            },
            "required": true
        },
        "responses": {
            "200": {"description": "The model's answer.", "content": {"application/json": {"schema": {}}}},
            "400": error_response("The input cannot be used."),
            "404": error_response("Model or version not found."),
            "413": error_response("The body exceeds max_request_size."),
            "500": error_response("The model did not answer within its response timeout."),
            "503": error_response("No worker is free (the queue is full) or the prediction failed."),
            "507": error_response("Out of resources.")
        }
    });
    let model = path_parameter("model_name", "Name of the model.");
    let version = path_parameter("model_version", "Version of the model.");
    json!({
        "openapi": "3.0.1",
        "info": info("oxserve inference API"),
        "paths": {
            "/": describe_self(),
            "/ping": {"get": {
                "operationId": "ping",
                "description": "Health: Healthy while every model has at least its minimum of live workers.",
                "responses": {"200": status_response("Healthy."), "500": status_response("Unhealthy.")}
            }},
            "/predictions/{model_name}": {"post": operation(predict.clone(), vec![model.clone()])},
            "/predictions/{model_name}/{model_version}": {"post": operation(predict, vec![model, version])}
        },
        "components": components()
    })
}

/// The management API (port 8081).
pub fn management() -> Value {
    let model = path_parameter("model_name", "Name of the model.");
    let version = path_parameter("model_version", "Version of the model.");
    let describe = json!({
        "description": "Describes the model (all versions with `all` as the version): settings, workers, queue.",
        "responses": {
            "200": {"description": "A list of model descriptions.", "content": {"application/json": {"schema": {"type": "array", "items": {"type": "object"}}}}},
            "404": error_response("Model or version not found.")
        }
    });
    let scale_parameters = |mut parameters: Vec<Value>| {
        parameters.extend([
            query_parameter(
                "min_worker",
                "integer",
                "Minimum number of workers (default 1).",
            ),
            query_parameter(
                "max_worker",
                "integer",
                "Maximum number of workers (default min_worker).",
            ),
            query_parameter("number_gpu", "integer", "Accepted for compatibility."),
            query_parameter(
                "synchronous",
                "boolean",
                "Wait until the workers have been scaled (default false).",
            ),
            query_parameter("timeout", "integer", "Accepted for compatibility."),
        ]);
        parameters
    };
    let scale = json!({
        "description": "Sets the number of workers. Scaling down lets in-flight requests finish.",
        "responses": {
            "200": status_response("Workers scaled (synchronous)."),
            "202": status_response("Scaling started (asynchronous)."),
            "400": error_response("max_worker is less than min_worker, or a parameter is malformed."),
            "404": error_response("Model or version not found."),
            "500": error_response("Workers could not be started.")
        }
    });
    let unregister = json!({
        "description": "Unregisters the model version (the default one when no version is given) after its accepted requests are answered. Needs the model API enabled.",
        "responses": {
            "200": status_response("Unregistered."),
            "403": error_response("The default version cannot be removed while other versions remain."),
            "404": error_response("Model or version not found."),
            "405": error_response("The model API is disabled.")
        }
    });
    json!({
        "openapi": "3.0.1",
        "info": info("oxserve management API"),
        "paths": {
            "/": describe_self(),
            "/models": {
                "get": {
                    "operationId": "listModels",
                    "description": "Lists the default version of every model, sorted by name.",
                    "parameters": [
                        query_parameter("limit", "integer", "Page size (default 100, at most 100)."),
                        query_parameter("next_page_token", "integer", "Where the page starts.")
                    ],
                    "responses": {"200": {"description": "A page of models.", "content": {"application/json": {"schema": {"type": "object"}}}}}
                },
                "post": {
                    "operationId": "registerModel",
                    "description": "Registers a model archive from the model store (or an allowed URL). Needs the model API enabled.",
                    "parameters": [
                        json!({"in": "query", "name": "url", "required": true, "description": "Archive file name in the model store, or an allowed URL.", "schema": {"type": "string"}}),
                        query_parameter("model_name", "string", "Name to register under (default: the manifest's)."),
                        query_parameter("handler", "string", "Accepted for compatibility; the archive's handler config is used."),
                        query_parameter("runtime", "string", "python, python3 or LSP."),
                        query_parameter("batch_size", "integer", "Largest batch (default 1)."),
                        query_parameter("max_batch_delay", "integer", "Milliseconds to wait for a batch to fill (default 100)."),
                        query_parameter("initial_workers", "integer", "Workers to start (default 0)."),
                        query_parameter("synchronous", "boolean", "Wait for the workers (query default true, JSON default false)."),
                        query_parameter("response_timeout", "integer", "Seconds a request may take (default 120)."),
                        query_parameter("startup_timeout", "integer", "Accepted for compatibility.")
                    ],
                    "responses": {
                        "200": status_response("Registered."),
                        "202": status_response("Registered; workers are starting."),
                        "400": error_response("Missing or malformed parameter, or an unusable archive."),
                        "404": error_response("The URL is empty, relative, or not allowed."),
                        "405": error_response("The model API is disabled."),
                        "409": error_response("That version is already registered."),
                        "500": error_response("Workers could not be started; the model was not kept.")
                    }
                }
            },
            "/models/{model_name}": {
                "get": operation(describe.clone(), vec![model.clone()]),
                "put": operation(scale.clone(), scale_parameters(vec![model.clone()])),
                "delete": operation(unregister.clone(), vec![model.clone()])
            },
            "/models/{model_name}/{model_version}": {
                "get": operation(describe, vec![model.clone(), version.clone()]),
                "put": operation(scale, scale_parameters(vec![model.clone(), version.clone()])),
                "delete": operation(unregister, vec![model.clone(), version.clone()])
            },
            "/models/{model_name}/{model_version}/set-default": {
                "put": {
                    "operationId": "setDefault",
                    "description": "Makes this version the default one.",
                    "parameters": [model, version],
                    "responses": {"200": status_response("Default version updated."), "404": error_response("Model or version not found.")}
                }
            }
        },
        "components": components()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_openapi_3_with_every_route() {
        let inference = inference();
        assert_eq!(inference["openapi"], "3.0.1");
        for path in [
            "/ping",
            "/predictions/{model_name}",
            "/predictions/{model_name}/{model_version}",
        ] {
            assert!(inference["paths"][path].is_object(), "{path}");
        }
        let management = management();
        for (path, method) in [
            ("/models", "post"),
            ("/models/{model_name}", "put"),
            ("/models/{model_name}/{model_version}", "delete"),
            ("/models/{model_name}/{model_version}/set-default", "put"),
        ] {
            assert!(
                management["paths"][path][method].is_object(),
                "{method} {path}"
            );
        }
    }
}
