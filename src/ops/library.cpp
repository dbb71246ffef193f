// The library `torchattn`: each op adds its schemas in its own file (ops/<op>.cpp) with
// TORCH_LIBRARY_FRAGMENT, and its kernels per dispatch key in ops/<key>/<op>_kernel.cpp.

#include <torchattn/ops/attention.h>

#include "ops/registration.h"

#include <torch/library.h>

TORCH_LIBRARY(torchattn, m) {
  (void)m;
}

namespace torchattn::ops {

bool ops_registered() {
  // Referencing every registering file's anchor keeps its static registrations in static
  // builds, where the linker would otherwise drop the unreferenced objects.
  using namespace detail;
  return scaled_dot_product_attention_registered() &&
         scaled_dot_product_attention_cpu_registered() &&
         scaled_dot_product_attention_autograd_registered() &&
         scaled_dot_product_attention_meta_registered() &&
         scaled_dot_product_attention_autocast_registered() &&
         additive_attention_scores_registered() && additive_attention_scores_cpu_registered() &&
         additive_attention_scores_autograd_registered() &&
         additive_attention_scores_meta_registered() &&
         additive_attention_scores_autocast_registered() && flex_attention_registered() &&
         flex_attention_cpu_registered() && flex_attention_autograd_registered() &&
         flex_attention_meta_registered() && flex_attention_autocast_registered() &&
         decode_attention_registered() && decode_attention_cpu_registered() &&
         decode_attention_autograd_registered() && decode_attention_meta_registered() &&
         decode_attention_autocast_registered() && graph_attention_registered() &&
         graph_attention_cpu_registered() && graph_attention_autograd_registered() &&
         graph_attention_meta_registered() && graph_attention_autocast_registered() &&
         table_bias_registered() && table_bias_cpu_registered() &&
         table_bias_autograd_registered() && table_bias_meta_registered() &&
         capability_registered();
}

} // namespace torchattn::ops
