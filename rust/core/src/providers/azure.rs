//! Azure OpenAI: OpenAI's formats under `/openai/deployments/{deployment}/...`.
//! Streams may begin with `"model":""` chunks carrying only
//! `prompt_filter_results` (an empty model is ignored). The body may omit
//! `model`: the deployment name from the path stands in.

use super::openai::compatible;
use crate::descriptor::{Cond, Descriptor, ModelEnd, PathModel};

pub static AZURE: Descriptor = Descriptor {
    path_model: Some(PathModel {
        after: "/openai/deployments/",
        last: false,
        end: ModelEnd::Char('/'),
        percent_decoded: true,
    }),
    body_markers: &["\"prompt_filter_results\"", "\"content_filter_results\""],
    ..compatible(
        "azure",
        "AzureOpenAI",
        &[&[Cond::PathContains("/openai/deployments/")]],
    )
};
