//! PyTorch's `SyncBatchNorm` for the head's BatchNorms when a batch is split over processes
//! or devices: the official DINO converts every BatchNorm with
//! `nn.SyncBatchNorm.convert_sync_batchnorm` so that each one normalises with the statistics
//! of the whole batch, not of a rank's share, and its backward pass sums the gradients of
//! those statistics over the ranks.
//!
//! Burn 0.22 has no collective inside autodiff (and custom backward ops cannot be written
//! against its run-time dispatch), so the backward is split at each synchronised BatchNorm:
//! the forward cuts the graph there (the input continues as a fresh leaf, the batch mean and
//! variance enter as leaves holding the all-ranks values), and [`BatchSync::backward`] runs the
//! pieces from the loss backwards. After each piece the gradients of the statistics are
//! summed over the ranks and turned into the gradient of the cut's input,
//! `dx = dx_direct + dmean / N + dvar * 2 (x - mean) / N` (N rows over all ranks), which the
//! next piece back-propagates (as the gradient of `sum(x * dx)`). This is the exact gradient
//! `SyncBatchNorm`'s backward computes; only float rounding differs from one process.

use std::cell::RefCell;
use std::sync::Arc;

use burn::tensor::{Gradients, Tensor, TensorData};

use super::collective::Collective;
use crate::model::BatchNorm;
use crate::{Error, Result};

/// The synchronised BatchNorms of one forward pass (one network, one part of a batch), and
/// the cuts its backward pass must join.
pub struct BatchSync {
    collective: Arc<dyn Collective>,
    /// Whether this part moves the running statistics (one part per process does: every part
    /// computes the same statistics, and the parts' networks share their running state).
    tracks: bool,
    cuts: RefCell<Vec<Cut>>,
}

/// Where a synchronised BatchNorm cut the graph.
struct Cut {
    /// The BatchNorm's input, still attached to the layers before it.
    input: Tensor<2>,
    /// The same values as the leaf the rest of the forward pass was built on.
    leaf: Tensor<2>,
    /// Leaves holding the all-ranks mean and biased variance, `[C]`.
    mean: Tensor<1>,
    variance: Tensor<1>,
    /// `input - mean`, without autodiff.
    centered: Tensor<2>,
    /// Rows over all ranks.
    rows: usize,
}

impl BatchSync {
    /// BatchNorms synchronised over the ranks of `collective`. Every rank must run the same
    /// layers in the same order (each normalisation and each backward piece is collective).
    /// `tracks`: this part moves the layers' running statistics (exactly one part of a
    /// process whose parts' networks share them, as Burn's copies of a module do).
    pub fn new(collective: Arc<dyn Collective>, tracks: bool) -> Self {
        Self {
            collective,
            tracks,
            cuts: RefCell::new(Vec::new()),
        }
    }

    /// `bn` applied to this rank's rows `x` (`[N, C]`) with the statistics of all ranks' rows
    /// (its running statistics moved by them if this part `tracks`, the same on every rank). A layer that normalises
    /// with its running statistics runs as usual. On an autodiff device the graph is cut here:
    /// take the gradients with [`Self::backward`].
    pub fn normalize(&self, bn: &BatchNorm, x: Tensor<2>) -> Result<Tensor<2>> {
        if !bn.uses_batch_statistics(&x) {
            return Ok(bn.forward(x));
        }
        let [rows, channels] = x.dims();
        let device = x.device();
        let values = x.clone().inner();
        let inner_device = values.device();
        // the mean first, then the spread around it (not E[x^2] - mean^2, which cancels)
        let mut sums = host(values.clone().sum_dim(0).reshape([channels]))?;
        sums.push(rows as f32);
        self.collective.all_reduce_sum(&mut sums);
        let n = sums.pop().unwrap_or(0.0);
        if !(1.0..=16_777_216.0).contains(&n) {
            return Err(Error::Input(format!(
                "synchronised BatchNorm over {n} rows (the ranks disagree or hold none)"
            )));
        }
        let total = n as usize;
        let mean: Vec<f32> = sums.iter().map(|s| s / n).collect();
        let mean = Tensor::<1>::from_data(TensorData::new(mean, [channels]), &inner_device);
        let centered = values - mean.clone().unsqueeze_dim::<2>(0);
        let mut squares = host(centered.clone().square().sum_dim(0).reshape([channels]))?;
        self.collective.all_reduce_sum(&mut squares);
        let variance: Vec<f32> = squares.iter().map(|s| s / n).collect();
        let variance = Tensor::<1>::from_data(TensorData::new(variance, [channels]), &inner_device);
        if self.tracks {
            bn.track(
                mean.clone().to_device(&device),
                variance.clone().to_device(&device),
                total,
            );
        }
        let normalise = |x: Tensor<2>, mean: Tensor<1>, variance: Tensor<1>| {
            let scale = (variance + bn.eps).sqrt().recip() * bn.weight.val();
            (x - mean.unsqueeze_dim::<2>(0)) * scale.unsqueeze_dim::<2>(0)
                + bn.bias.val().unsqueeze_dim::<2>(0)
        };
        if !device.is_autodiff() {
            return Ok(normalise(x, mean, variance));
        }
        let leaf = x.clone().detach().require_grad();
        let mean = Tensor::from_inner(mean).require_grad();
        let variance = Tensor::from_inner(variance).require_grad();
        let y = normalise(leaf.clone(), mean.clone(), variance.clone());
        self.cuts.borrow_mut().push(Cut {
            input: x,
            leaf,
            mean,
            variance,
            centered,
            rows: total,
        });
        Ok(y)
    }

    /// The backward pass of `loss` through every cut, last first: one set of gradients per
    /// piece of the graph (together: the gradients of `loss` over all ranks' rows, for the
    /// parameters this rank's pass used). Collective, like the forward.
    pub fn backward(&self, loss: Tensor<1>) -> Result<Vec<Gradients>> {
        let mut cuts = self.cuts.take();
        let mut grads = loss.backward();
        let mut pieces = Vec::with_capacity(cuts.len() + 1);
        while let Some(cut) = cuts.pop() {
            let [rows, channels] = cut.leaf.dims();
            let inner_device = cut.centered.device();
            let zeros1 = || Tensor::<1>::zeros([channels], &inner_device);
            let direct = cut
                .leaf
                .grad_remove(&mut grads)
                .unwrap_or_else(|| Tensor::zeros([rows, channels], &inner_device));
            let dmean = cut.mean.grad_remove(&mut grads).unwrap_or_else(zeros1);
            let dvar = cut.variance.grad_remove(&mut grads).unwrap_or_else(zeros1);
            let mut stats = host(dmean)?;
            stats.extend(host(dvar)?);
            self.collective.all_reduce_sum(&mut stats);
            let n = cut.rows as f32;
            let dmean: Vec<f32> = stats[..channels].iter().map(|g| g / n).collect();
            let dvar: Vec<f32> = stats[channels..].iter().map(|g| 2.0 * g / n).collect();
            let row = |v: Vec<f32>| {
                Tensor::<1>::from_data(TensorData::new(v, [channels]), &inner_device)
                    .unsqueeze_dim::<2>(0)
            };
            let dx = direct + row(dmean) + cut.centered * row(dvar);
            pieces.push(grads);
            if !cut.input.is_tracked() {
                // nothing before this BatchNorm learns
                return Ok(pieces);
            }
            grads = (cut.input * Tensor::from_inner(dx)).sum().backward();
        }
        pieces.push(grads);
        Ok(pieces)
    }
}

/// A tensor's values in host memory.
fn host(t: Tensor<1>) -> Result<Vec<f32>> {
    t.into_data()
        .try_to_vec::<f32>()
        .map_err(|e| Error::Input(format!("reading batch statistics back: {e:?}")))
}
