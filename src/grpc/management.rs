//! TorchServe's `ManagementAPIsService` (`ManagementImpl.java`): the REST management calls of
//! [`crate::manage`] with protobuf parameters. Zero and empty fields mean "not given"
//! (TorchServe's `GRPCUtils.getRegisterParam`), so the REST defaults apply. `msg` is the
//! description or list JSON as REST sends it, and for the other calls the `status` text of
//! REST's `{"status": ...}` body (TorchServe's `StatusResponse.getStatus()`). Register and
//! unregister are refused with PERMISSION_DENIED "Model API disabled" unless the model API is on.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::listener::Limits;
use super::proto::management::management_ap_is_service_server::{
    ManagementApIsService, ManagementApIsServiceServer,
};
use super::proto::management::{
    DescribeModelRequest, ListModelsRequest, ManagementResponse, RegisterModelRequest,
    ScaleWorkerRequest, SetDefaultRequest, UnregisterModelRequest,
};
use crate::error::ServeError;
use crate::manage::{self, RegisterParams, ScaleParams};
use crate::state::AppState;

/// The service, over the server's shared state.
pub struct ManagementService {
    state: Arc<AppState>,
}

/// The service with its message limits, ready for a listener's routes.
pub fn service(state: Arc<AppState>) -> ManagementApIsServiceServer<ManagementService> {
    let limits = Limits::of(&state.config);
    ManagementApIsServiceServer::new(ManagementService { state })
        .max_decoding_message_size(limits.decoding)
        .max_encoding_message_size(limits.encoding)
}

/// A text field; empty means not given.
fn given(text: String) -> Option<String> {
    Some(text).filter(|text| !text.is_empty())
}

/// A number field; zero or negative means not given.
fn positive(number: i32) -> Option<usize> {
    usize::try_from(number).ok().filter(|&number| number > 0)
}

/// `msg` text for a JSON answer: Gson's pretty printing, as TorchServe's `ManagementImpl`.
fn json_answer(value: &serde_json::Value) -> Response<ManagementResponse> {
    let msg = serde_json::to_string_pretty(value).unwrap_or_default();
    Response::new(ManagementResponse { msg })
}

fn status_answer(status: manage::Status) -> Response<ManagementResponse> {
    Response::new(ManagementResponse {
        msg: status.message,
    })
}

#[tonic::async_trait]
impl ManagementApIsService for ManagementService {
    async fn describe_model(
        &self,
        request: Request<DescribeModelRequest>,
    ) -> Result<Response<ManagementResponse>, Status> {
        let request = request.into_inner();
        let version = given(request.model_version);
        let described =
            manage::describe(&self.state, &request.model_name, version.as_deref()).await?;
        Ok(json_answer(&described))
    }

    async fn list_models(
        &self,
        request: Request<ListModelsRequest>,
    ) -> Result<Response<ManagementResponse>, Status> {
        let request = request.into_inner();
        let limit = positive(request.limit).map(|limit| limit as i64);
        let token = Some(i64::from(request.next_page_token));
        Ok(json_answer(&manage::list(&self.state, limit, token)))
    }

    async fn register_model(
        &self,
        request: Request<RegisterModelRequest>,
    ) -> Result<Response<ManagementResponse>, Status> {
        if !self.state.config.enable_model_api {
            return Err(ServeError::ModelApiDisabled.into());
        }
        let request = request.into_inner();
        let params = RegisterParams {
            url: given(request.url),
            model_name: given(request.model_name),
            handler: given(request.handler),
            runtime: given(request.runtime),
            batch_size: positive(request.batch_size),
            max_batch_delay: positive(request.max_batch_delay).map(|delay| delay as u64),
            initial_workers: positive(request.initial_workers),
            synchronous: request.synchronous,
            response_timeout: positive(request.response_timeout).map(|seconds| seconds as u64),
            startup_timeout: positive(request.startup_timeout).map(|seconds| seconds as u64),
        };
        Ok(status_answer(manage::register(&self.state, params).await?))
    }

    async fn scale_worker(
        &self,
        request: Request<ScaleWorkerRequest>,
    ) -> Result<Response<ManagementResponse>, Status> {
        let request = request.into_inner();
        let min_worker = positive(request.min_worker).map_or(1, |min| min as i64);
        let params = ScaleParams {
            min_worker,
            max_worker: positive(request.max_worker).map_or(min_worker, |max| max as i64),
            synchronous: request.synchronous,
        };
        let version = given(request.model_version);
        let status =
            manage::scale(&self.state, &request.model_name, version.as_deref(), params).await?;
        Ok(status_answer(status))
    }

    async fn set_default(
        &self,
        request: Request<SetDefaultRequest>,
    ) -> Result<Response<ManagementResponse>, Status> {
        let request = request.into_inner();
        let status =
            manage::set_default(&self.state, &request.model_name, &request.model_version).await?;
        Ok(status_answer(status))
    }

    async fn unregister_model(
        &self,
        request: Request<UnregisterModelRequest>,
    ) -> Result<Response<ManagementResponse>, Status> {
        if !self.state.config.enable_model_api {
            return Err(ServeError::ModelApiDisabled.into());
        }
        let request = request.into_inner();
        if request.model_name.is_empty() {
            // TorchServe's words for a missing model_name here.
            return Err(ServeError::BadRequest("Parameter url is required.".into()).into());
        }
        let version = given(request.model_version);
        let status =
            manage::unregister(&self.state, &request.model_name, version.as_deref()).await?;
        Ok(status_answer(status))
    }
}
