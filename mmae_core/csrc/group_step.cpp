// The "modalities" thread plan's training step, in C++ so its threads need no GIL.
//
// This is a line-by-line port of mmae_core/train.py's _Stepper.__call__ (missing rows, modality
// dropout and alignment included) together with model.stack_forward / stack_backward and the
// fused Adam update: the same ATen kernels, called in the same order with
// the same scalars, so it gives the same bits as the Python step (tests/test_native_step.py checks
// that). Why C++: the Python step runs its modality groups on Python threads, and every kernel call
// releases and re-takes the GIL; on 2 cores the hand-offs cost about 40 % of a step. Here the
// groups run on plain threads and meet three times per step.
#include <torch/extension.h>

#include <atomic>
#include <condition_variable>
#include <exception>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

using at::Tensor;

namespace {

struct BN {
  Tensor gamma, beta, mean, var, g_gamma, g_beta;
  double momentum, eps;
};

struct Stack {
  std::vector<Tensor> w, wt, wg;  // weights, their transposes (views), their gradients
  Tensor bias, bias_g;            // the last Linear's bias and its gradient
  std::vector<BN> bns;
};

struct Tape {
  std::vector<Tensor> inputs, pre_bn, mean, invstd;
  std::vector<bool> batch_stats;
  Tensor out;
};

Tape stack_forward(const Stack& st, const Tensor& x) {
  Tape t;
  Tensor a = x;
  for (size_t k = 0; k < st.bns.size(); ++k) {
    const BN& bn = st.bns[k];
    Tensor y = at::mm(a, st.wt[k]);
    bool batch_stats = a.size(0) > 1;  // a lone row: running stats, as BatchNorm.forward does
    auto r = at::native_batch_norm(y, bn.gamma, bn.beta, bn.mean, bn.var, batch_stats, bn.momentum, bn.eps);
    t.inputs.push_back(a);
    t.pre_bn.push_back(y);
    t.mean.push_back(std::get<1>(r));
    t.invstd.push_back(std::get<2>(r));
    t.batch_stats.push_back(batch_stats);
    a = std::get<0>(r).relu_();
  }
  t.inputs.push_back(a);
  t.out = at::addmm(st.bias, a, st.wt.back());
  return t;
}

Tensor stack_backward(const Stack& st, const Tape& t, Tensor g, bool need_input) {
  at::mm_out(const_cast<Tensor&>(st.wg.back()), g.t(), t.inputs.back());
  at::sum_out(const_cast<Tensor&>(st.bias_g), g, {0});
  for (int64_t k = static_cast<int64_t>(st.bns.size()) - 1; k >= 0; --k) {
    g = at::threshold_backward(at::mm(g, st.w[k + 1]), t.inputs[k + 1], 0);
    const BN& bn = st.bns[k];
    auto r = at::native_batch_norm_backward(g, t.pre_bn[k], bn.gamma, bn.mean, bn.var, t.mean[k], t.invstd[k], t.batch_stats[k], bn.eps,
                                            {true, true, true});
    const_cast<Tensor&>(bn.g_gamma).copy_(std::get<1>(r));
    const_cast<Tensor&>(bn.g_beta).copy_(std::get<2>(r));
    g = std::get<0>(r);
    at::mm_out(const_cast<Tensor&>(st.wg[k]), g.t(), t.inputs[k]);
  }
  return need_input ? at::mm(g, st.w[0]) : Tensor();
}

struct Adam {  // torch.optim.Adam/AdamW(fused=True) on one flat parameter, as mmae_core.step_fused.FlatAdam
  Tensor param, grad, exp_avg, exp_avg_sq, steps;
};

// Runs a phase's tasks (one per modality group) on the caller's thread and n persistent workers.
// Tasks are taken, not assigned: whichever thread is free takes the next one. A group always runs
// on one thread, with the plan's intra-op thread count on every thread, so its bits do not depend
// on which thread ran it; and
// when another program holds a core and a worker is descheduled, the caller takes its groups
// instead of waiting for it (a fixed assignment ran 3.6x slower with one core busy).
class Pool {
 public:
  Pool(size_t n_workers, int intra_threads) {
    for (size_t i = 0; i < n_workers; ++i) threads_.emplace_back([this, intra_threads] { loop(intra_threads); });
    // wait until every worker has set its thread count: that setting also reaches process-wide
    // state (MKL's), and the trainer restores the caller's count when training ends
    while (ready_.load(std::memory_order_acquire) != n_workers) std::this_thread::yield();
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  // fn(0) ... fn(n_tasks - 1), each once, on whichever threads are free; returns when all are done,
  // rethrowing the first error (in task order).
  void each(size_t n_tasks, const std::function<void(size_t)>& fn) {
    fn_ = &fn;
    n_tasks_ = n_tasks;
    errors_.assign(n_tasks, nullptr);
    done_.store(0, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lk(mu_);
      phase_ = (phase_ & ~kTaskMask) + kPhase;  // a new phase, task 0 next
      state_.store(phase_, std::memory_order_release);
    }
    cv_.notify_all();
    work(phase_);
    for (int spin = 0; done_.load(std::memory_order_acquire) != n_tasks; ++spin) std::this_thread::yield();
    for (auto& e : errors_)
      if (e) std::rethrow_exception(e);
  }

 private:
  static constexpr uint64_t kTaskMask = 0xffffffffULL, kPhase = 1ULL << 32;

  // Take and run tasks of the given phase until none is left.
  void work(uint64_t phase) {
    for (;;) {
      uint64_t v = state_.load(std::memory_order_acquire);
      if ((v & ~kTaskMask) != (phase & ~kTaskMask)) return;  // that phase is over
      size_t task = static_cast<size_t>(v & kTaskMask);
      if (task >= n_tasks_) return;
      if (!state_.compare_exchange_weak(v, v + 1, std::memory_order_acq_rel)) continue;
      try {
        (*fn_)(task);
      } catch (...) {
        errors_[task] = std::current_exception();
      }
      done_.fetch_add(1, std::memory_order_release);
    }
  }

  void loop(int intra_threads) {
    at::set_num_threads(intra_threads);  // per thread under OpenMP: without it each op would use every core
    ready_.fetch_add(1, std::memory_order_release);
    uint64_t seen = 0;
    for (;;) {
      // spin briefly (a step's phases are tens of microseconds apart), then sleep
      for (int spin = 0; (state_.load(std::memory_order_acquire) & ~kTaskMask) == seen && spin < 2000; ++spin) std::this_thread::yield();
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return stop_ || (state_.load(std::memory_order_acquire) & ~kTaskMask) != seen; });
        if (stop_) return;
      }
      uint64_t v = state_.load(std::memory_order_acquire);
      seen = v & ~kTaskMask;
      work(v);
    }
  }

  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<uint64_t> state_{0};  // phase number (high 32 bits) and the next task (low 32 bits)
  uint64_t phase_ = 0;              // the caller's copy
  std::atomic<size_t> done_{0}, ready_{0};
  std::atomic<size_t> n_tasks_{0};
  std::vector<std::exception_ptr> errors_;
  bool stop_ = false;
  const std::function<void(size_t)>* fn_ = nullptr;
};

Stack make_stack(const std::vector<Tensor>& w, const std::vector<Tensor>& wt, const std::vector<Tensor>& wg, const Tensor& bias,
                 const Tensor& bias_g, const std::vector<std::vector<Tensor>>& bns, const std::vector<double>& momentum,
                 const std::vector<double>& eps) {
  Stack s{w, wt, wg, bias, bias_g, {}};
  for (size_t k = 0; k < bns.size(); ++k) s.bns.push_back(BN{bns[k][0], bns[k][1], bns[k][2], bns[k][3], bns[k][4], bns[k][5], momentum[k], eps[k]});
  return s;
}

}  // namespace

class GroupStep {
 public:
  GroupStep(std::vector<py::tuple> enc, std::vector<py::tuple> dec, std::vector<std::vector<int64_t>> groups, std::vector<std::vector<Tensor>> adam,
            double lr, double beta1, double beta2, double weight_decay, double eps, double align_weight, int64_t intra_threads, Tensor order)
      : groups_(std::move(groups)), lr_(lr), beta1_(beta1), beta2_(beta2), wd_(weight_decay), eps_(eps), w_(align_weight), order_(std::move(order)) {
    auto cast = [](const py::tuple& t) {
      return make_stack(t[0].cast<std::vector<Tensor>>(), t[1].cast<std::vector<Tensor>>(), t[2].cast<std::vector<Tensor>>(), t[3].cast<Tensor>(),
                        t[4].cast<Tensor>(), t[5].cast<std::vector<std::vector<Tensor>>>(), t[6].cast<std::vector<double>>(), t[7].cast<std::vector<double>>());
    };
    for (auto& t : enc) enc_.push_back(cast(t));
    for (auto& t : dec) dec_.push_back(cast(t));
    for (auto& a : adam) adam_.push_back(Adam{a[0], a[1], a[2], a[3], a[4]});
    pool_ = std::make_unique<Pool>(groups_.size() - 1, static_cast<int>(intra_threads));
  }

  void close() { pool_.reset(); }

  // x: the batch per modality (model order). enc_rows / dec_rows: per modality the rows that have it
  // on the encoder side (after modality dropout) and the decoder side, or None for every row.
  // inv: 1 / (modalities per row) as (B, 1), or None when every row has every modality.
  Tensor step(const std::vector<Tensor>& x, const std::vector<std::optional<Tensor>>& enc_rows,
              const std::vector<std::optional<Tensor>>& dec_rows, const std::optional<Tensor>& inv_count) {
    TORCH_CHECK(pool_, "this training step was closed");
    at::NoGradGuard no_grad;
    const size_t G = groups_.size();
    const int64_t n_rows = x[0].size(0);
    const double inv_all = 1.0 / static_cast<double>(enc_.size());
    auto times_inv = [&](const Tensor& t) { return inv_count ? at::mul(t, *inv_count) : at::mul(t, inv_all); };
    auto rows = [](const std::vector<std::optional<Tensor>>& r, int64_t j) { return r.empty() ? std::optional<Tensor>() : r[j]; };

    struct Encoded {
      int64_t j;
      std::optional<Tensor> r;
      Tape tape;
    };
    std::vector<std::vector<Encoded>> done(G);
    std::vector<Tensor> sums(G);
    pool_->each(G, [&](size_t i) {
      at::NoGradGuard ng;
      Tensor total;
      for (int64_t j : groups_[i]) {
        const std::optional<Tensor> r = rows(enc_rows, j);
        if (r && r->numel() == 0) continue;
        done[i].push_back(Encoded{j, r, stack_forward(enc_[j], r ? x[j].index_select(0, *r) : x[j])});
        const Tensor& h = done[i].back().tape.out;
        if (!r)
          total = total.defined() ? at::add(total, h) : h;
        else if (!total.defined())
          total = at::zeros({n_rows, h.size(1)}, h.options()).index_add_(0, *r, h);
        else  // not in place: total may still be an earlier modality's h, which alignment reads
          total = total.index_add(0, *r, h);
      }
      sums[i] = total;
    });
    Tensor total;
    for (const Tensor& s : sums)
      if (s.defined()) total = total.defined() ? at::add(total, s) : s;
    const Tensor z = times_inv(total);

    std::vector<Tensor> losses(G), gz(G);
    pool_->each(G, [&](size_t i) {
      at::NoGradGuard ng;
      adam_[i].grad.zero_();
      std::vector<Tensor> ls;
      Tensor g_z;
      for (int64_t j : groups_[i]) {
        const std::optional<Tensor> r = rows(dec_rows, j);
        if (r && r->numel() == 0) {
          ls.push_back(at::zeros({}, z.options()));  // nobody in this batch has it: nothing to score
          continue;
        }
        Tape t = stack_forward(dec_[j], r ? z.index_select(0, *r) : z);
        Tensor diff = t.out.sub_(r ? x[j].index_select(0, *r) : x[j]).view(-1);
        const int64_t numel = diff.numel();
        ls.push_back(at::div(at::dot(diff, diff), numel));  // MSE over the rows that have it
        Tensor g = stack_backward(dec_[j], t, diff.mul_(2.0 / static_cast<double>(numel)).view_as(t.out), true);
        if (!r)
          g_z = g_z.defined() ? g_z.add_(g) : g;
        else
          g_z = (g_z.defined() ? g_z : at::zeros_like(z)).index_add_(0, *r, g);
      }
      losses[i] = at::stack(ls);
      gz[i] = g_z;
    });
    Tensor g_sum;
    for (const Tensor& g : gz)
      if (g.defined()) g_sum = g_sum.defined() ? at::add(g_sum, g) : g;
    g_sum = times_inv(g_sum);  // dL/d(row-sum of encodings) = dL/dz / count

    std::vector<Tensor> aligns(G);
    pool_->each(G, [&](size_t i) {
      at::NoGradGuard ng;
      Tensor align = at::zeros({}, z.options());
      for (const Encoded& e : done[i]) {
        Tensor g = e.r ? g_sum.index_select(0, *e.r) : g_sum;
        if (w_ > 0) {
          Tensor diff = at::sub(e.tape.out, e.r ? z.index_select(0, *e.r) : z).view(-1);
          align = at::add(align, at::div(at::dot(diff, diff), n_rows));
          g = at::add(g, at::mul(diff.view_as(e.tape.out), 2.0 * w_ / static_cast<double>(n_rows)));
        }
        stack_backward(enc_[e.j], e.tape, g, false);
      }
      Adam& a = adam_[i];
      a.steps.add_(1);
      if (wd_ > 0)
        at::_fused_adamw_({a.param}, {a.grad}, {a.exp_avg}, {a.exp_avg_sq}, {}, {a.steps}, lr_, beta1_, beta2_, wd_, eps_, false, false, {}, {});
      else
        at::_fused_adam_({a.param}, {a.grad}, {a.exp_avg}, {a.exp_avg_sq}, {}, {a.steps}, lr_, beta1_, beta2_, wd_, eps_, false, false, {}, {});
      aligns[i] = align;
    });
    Tensor recon = at::index(at::cat(losses), {order_});
    Tensor align = at::stack(aligns).sum();
    return at::cat({recon, align.unsqueeze(0), at::add(recon.sum(), at::mul(align, w_)).unsqueeze(0)});
  }

 private:
  std::vector<Stack> enc_, dec_;
  std::vector<std::vector<int64_t>> groups_;
  std::vector<Adam> adam_;
  double lr_, beta1_, beta2_, wd_, eps_, w_;
  Tensor order_;
  std::unique_ptr<Pool> pool_;
};

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  py::class_<GroupStep>(m, "GroupStep")
      .def(py::init<std::vector<py::tuple>, std::vector<py::tuple>, std::vector<std::vector<int64_t>>, std::vector<std::vector<Tensor>>, double, double,
                    double, double, double, double, int64_t, Tensor>())
      .def("step", &GroupStep::step, py::call_guard<py::gil_scoped_release>())
      .def("close", &GroupStep::close, py::call_guard<py::gil_scoped_release>());
}
