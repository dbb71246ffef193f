// Autograd gradients of every module against central finite differences in float64, with a
// mask, a causal mask and a fully masked row.

#include <torchattn/torchattn.h>

#include "support/gradcheck.h"
#include "support/modules.h"

#include <catch2/catch_test_macros.hpp>

TEST_CASE("gradients match finite differences", "[nn][gradcheck]") {
  const int64_t B = 2, H = 2, Lq = 3, Lk = 4, E = 3;
  for (bool causal : {false, true}) {
    for (auto& m : torchattn::testing::all_modules(E, H, torch::kDouble)) {
      DYNAMIC_SECTION(m.name << (causal ? " causal" : "")) {
        torch::manual_seed(5);
        auto q = torch::randn({B, H, Lq, E}, torch::kDouble).requires_grad_(true);
        auto k = torch::randn({B, H, Lk, E}, torch::kDouble).requires_grad_(true);
        auto v = torch::randn({B, H, Lk, 2}, torch::kDouble).requires_grad_(true);
        auto mask = torch::ones({Lq, Lk}, torch::kBool);
        mask[0][1] = false;
        mask[2].fill_(false); // a fully masked row
        auto g_out = torch::randn({B, H, Lq, 2}, torch::kDouble);
        auto g_w = torch::randn({B, H, Lq, Lk}, torch::kDouble);
        auto loss = [&] {
          auto [out, w] = m(q, k, v, mask, {}, causal);
          return (out * g_out).sum() + (w * g_w).sum();
        };
        std::vector<std::pair<std::string, torch::Tensor>> leaves = {
            {"query", q}, {"key", k}, {"value", v}};
        for (auto& p : m.module.ptr()->named_parameters()) {
          leaves.emplace_back(p.key(), p.value());
        }
        auto result = torchattn::testing::gradcheck(loss, leaves);
        INFO("worst at " << result.worst_where);
        CHECK(result.worst_error < 1e-7);
      }
    }
  }
}
