//! Loop fusion: runs of elementwise ops over one shape, and the sums that consume them, become one
//! loop over the elements, tile by tile.
//!
//! A **group** has an iteration shape `S`. Its members, in recorded order, are
//!
//! * elementwise ops ([`Op::elementwise`](crate::Op::elementwise)) whose output has shape `S`,
//!   and `broadcast_to`s up to `S`: each computes one tile of its value into a small buffer
//!   (in cache) from the tiles of its arguments;
//! * sums of an `S`-shaped member (`sum`, `sum_axis`/`mean_axis`, `sum_to`): **sinks**, which
//!   accumulate each tile into their (smaller) result and are complete only when the loop ends,
//!   so nothing in the same group may read them.
//!
//! Arguments from outside the group are read where they lie: a value of shape `S` as a slice of
//! its buffer, a smaller one (a row maximum, a bias, a scalar) through broadcast strides, so a
//! broadcast is never materialised. Only the members read after the group (by a later step, or
//! as the step's result) are written out; every other value lives one tile at a time.
//!
//! A tile is a run of whole rows of `S` (the last axis), or one piece of a row longer than
//! [`TILE`]. A sum over the last axis of a row that fits in a tile is the same `sum_slice` of the
//! same elements as the eager kernel, so it rounds the same; sums whose rows span tiles, or over
//! other axes, add in another order (compiled and eager agree to rounding, not bit for bit).
//!
//! The loop runs on one thread (the eager kernels it replaces use the pool: splitting the tile
//! loop across threads deterministically is the next step).

use super::plan::{NodeMeta, Slot, Step};
use crate::autodiff::rule::Elementwise;
use crate::autodiff::tape::OpRef;
use crate::core::float::Float;
use crate::ops::layout::BroadcastToOp;
use crate::ops::reduce::{SumOp, SumToOp};
use crate::tensor::kernels::sum_slice;
use crate::tensor::{Tensor, pool};
use smallvec::SmallVec;

/// Elements per tile: 4096 `f32` are 16 KiB, so the buffers of a dozen members stay in L2.
pub(crate) const TILE: usize = 4096;

/// How an operand of shape `A` is read at the positions of the iteration shape `S`.
#[derive(Clone, Debug)]
pub(crate) struct Map {
    /// `A == S`: the operand's own elements, in order.
    pub(crate) full: bool,
    /// The operand's strides over the outer axes of `S` (all but the last): 0 where broadcast.
    pub(crate) outer: SmallVec<[usize; 6]>,
    /// The stride over the last axis of `S`: 1, or 0 where broadcast.
    pub(crate) last: usize,
}

impl Map {
    /// The map of a value of shape `a` broadcast to `s` (`a` broadcasts to `s`).
    fn new(a: &[usize], s: &[usize]) -> Map {
        let r = s.len();
        let mut strides = vec![0usize; r];
        let mut acc = 1;
        for k in 0..a.len() {
            let (da, ds) = (a.len() - 1 - k, r - 1 - k);
            strides[ds] = if a[da] == 1 { 0 } else { acc };
            acc *= a[da];
        }
        let (outer, last) = match r {
            0 => (SmallVec::new(), 0),
            _ => (strides[..r - 1].iter().copied().collect(), strides[r - 1]),
        };
        Map {
            full: a == s,
            outer,
            last: if r > 0 && s[r - 1] > 1 { last } else { 0 },
        }
    }

    /// The operand offset of the start of row `row` of `S` (whose outer extents are `dims`).
    #[inline]
    fn row_offset(&self, mut row: usize, dims: &[usize]) -> usize {
        let mut off = 0;
        for d in (0..dims.len()).rev() {
            let i = row % dims[d];
            row /= dims[d];
            off += i * self.outer[d];
        }
        off
    }
}

/// An argument of a member: a group input or an earlier member.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Arg {
    In(u32),
    Member(u32),
}

/// What a member computes.
pub(crate) enum Kind<T: Float> {
    /// An elementwise op.
    Elem(OpRef<T>),
    /// The argument itself (a `broadcast_to`: the broadcast happens when the input is read).
    Copy,
    /// A sum of the argument down to a smaller shape (`map`: how the result is indexed from `S`;
    /// `all`: down to one element), times `scale` for a mean.
    Sum { map: Map, all: bool, scale: Option<T> },
}

/// One member of a group.
pub(crate) struct Member<T: Float> {
    pub(crate) kind: Kind<T>,
    pub(crate) args: SmallVec<[Arg; 3]>,
    /// The recorded node it computes.
    pub(crate) node: usize,
    /// Where its value goes when something after the group reads it (always, for a sink).
    pub(crate) out: Option<Slot>,
    /// The shape of its value.
    pub(crate) shape: Vec<usize>,
}

/// A fused loop.
pub(crate) struct Group<T: Float> {
    /// The iteration shape.
    pub(crate) shape: Vec<usize>,
    /// The values read from outside, with how each is indexed.
    pub(crate) inputs: Vec<(Slot, Map, Vec<usize>)>,
    pub(crate) members: Vec<Member<T>>,
}

/// What the fuser knows about a recorded op.
pub(crate) enum Class<T: Float> {
    Elem(OpRef<T>),
    Broadcast,
    /// A sum of the input to the output: the kept shape (rank of the input, 1 where summed) and
    /// the mean's divisor.
    Sum {
        keep: Vec<usize>,
        mean: Option<usize>,
    },
    Other,
}

/// Classifies a recorded op with its input shapes and output shape.
pub(crate) fn classify<T: Float>(op: &OpRef<T>, inputs: &[&[usize]], out: &[usize]) -> Class<T> {
    let o = op.get();
    if let Some(e) = o.elementwise() {
        if e.arity() == inputs.len() && inputs.iter().all(|s| broadcasts(s, out)) {
            return Class::Elem(op.clone());
        }
        return Class::Other;
    }
    let any = o.as_any();
    if inputs.len() != 1 {
        return Class::Other;
    }
    let x = inputs[0];
    if let Some(b) = any.downcast_ref::<BroadcastToOp>() {
        if &b.0[..] == out && broadcasts(x, out) {
            return Class::Broadcast;
        }
    } else if let Some(s) = any.downcast_ref::<SumOp>() {
        let keep: Vec<usize> = match s.axis {
            None => vec![1; x.len()],
            Some(a) => {
                let Ok(a) = crate::ops::common::resolve_axis("sum", a, x.len()) else {
                    return Class::Other;
                };
                let mut k = x.to_vec();
                k[a] = 1;
                k
            }
        };
        let count: usize = x.iter().product::<usize>() / keep.iter().product::<usize>().max(1);
        return Class::Sum {
            keep,
            mean: s.mean.then_some(count),
        };
    } else if let Some(s) = any.downcast_ref::<SumToOp>()
        && s.0.len() <= x.len()
        && broadcasts(&s.0, x)
    {
        let mut keep = vec![1; x.len() - s.0.len()];
        keep.extend_from_slice(&s.0);
        return Class::Sum { keep, mean: None };
    }
    Class::Other
}

/// True when `a` broadcasts to `s` (NumPy rules, `a` no longer than `s`).
fn broadcasts(a: &[usize], s: &[usize]) -> bool {
    a.len() <= s.len() && a.iter().rev().zip(s.iter().rev()).all(|(&x, &y)| x == y || x == 1)
}

/// A group being built: members and inputs so far.
pub(crate) struct Builder<T: Float> {
    pub(crate) group: Group<T>,
    /// For each recorded node in the group: its member index, and whether it is a sink.
    pub(crate) index: std::collections::HashMap<usize, (u32, bool)>,
}

impl<T: Float> Builder<T> {
    pub(crate) fn new(shape: &[usize]) -> Self {
        Builder {
            group: Group {
                shape: shape.to_vec(),
                inputs: Vec::new(),
                members: Vec::new(),
            },
            index: Default::default(),
        }
    }

    /// Whether node `j` can be read by a new member: a non-sink member or an outside value.
    pub(crate) fn readable(&self, j: usize) -> bool {
        self.index.get(&j).is_none_or(|&(_, sink)| !sink)
    }

    fn arg(&mut self, j: usize, shape: &[usize]) -> Arg {
        if let Some(&(m, _)) = self.index.get(&j) {
            return Arg::Member(m);
        }
        if let Some(k) = self.group.inputs.iter().position(|(s, _, _)| *s as usize == j) {
            return Arg::In(k as u32);
        }
        let map = Map::new(shape, &self.group.shape);
        self.group.inputs.push((j as Slot, map, shape.to_vec()));
        Arg::In((self.group.inputs.len() - 1) as u32)
    }

    /// Adds node `node` (inputs `ins` with shapes `shapes`) as a member of kind `kind`.
    pub(crate) fn push(&mut self, node: usize, kind: Kind<T>, ins: &[usize], shapes: &[&[usize]], out_shape: &[usize]) {
        let sink = matches!(kind, Kind::Sum { .. });
        let args = ins.iter().zip(shapes).map(|(&j, s)| self.arg(j, s)).collect();
        self.index.insert(node, (self.group.members.len() as u32, sink));
        self.group.members.push(Member {
            kind,
            args,
            node,
            out: sink.then_some(node as Slot),
            shape: out_shape.to_vec(),
        });
    }

    /// The kind of a sum member of the group's shape down to `keep`.
    pub(crate) fn sum_kind(&self, keep: &[usize], mean: Option<usize>) -> Kind<T> {
        Kind::Sum {
            map: Map::new(keep, &self.group.shape),
            all: keep.iter().all(|&k| k == 1),
            scale: mean.map(|n| T::ONE / T::from_usize(n)),
        }
    }
}

impl<T: Float> Group<T> {
    /// Runs the loop: `read(slot)` gives an input's value; returns each written member's slot
    /// and value.
    pub(crate) fn run<'a>(&self, read: impl Fn(Slot) -> &'a Tensor<T>) -> Vec<(Slot, Tensor<T>)>
    where
        T: 'a,
    {
        let s = &self.shape;
        let r = s.len();
        let n = if r == 0 { 1 } else { s[r - 1] };
        let total: usize = s.iter().product();
        let outer_dims: &[usize] = if r == 0 { &[] } else { &s[..r - 1] };
        let ins: Vec<&[T]> = self.inputs.iter().map(|(x, _, _)| read(*x).data()).collect();

        // Outputs: full buffers for written elementwise members, accumulators for sinks.
        let mut outs: Vec<Option<Vec<T>>> = self
            .members
            .iter()
            .map(|m| match (&m.kind, m.out) {
                (Kind::Sum { all: true, .. }, _) => Some(Vec::with_capacity(total.div_ceil(TILE) + 1)),
                (Kind::Sum { .. }, _) => Some(vec![-T::ZERO; m.shape.iter().product()]),
                (_, Some(_)) => Some(pool::buffer(total)),
                (_, None) => None,
            })
            .collect();
        let mut bufs: Vec<Vec<T>> = self
            .members
            .iter()
            .map(|m| match m.kind {
                Kind::Sum { .. } => Vec::new(),
                _ => vec![T::ZERO; TILE.min(total)],
            })
            .collect();
        let mut in_bufs: Vec<Vec<T>> = self
            .inputs
            .iter()
            .map(|(_, map, _)| {
                if map.full {
                    Vec::new()
                } else {
                    vec![T::ZERO; TILE.min(total)]
                }
            })
            .collect();

        let mut tile = |start: usize, len: usize, row0: usize, c0: usize, c1: usize, rows: usize| {
            // Broadcast inputs: filled row segment by row segment.
            for (k, (_, map, _)) in self.inputs.iter().enumerate() {
                if map.full {
                    continue;
                }
                let buf = &mut in_bufs[k][..len];
                let src = ins[k];
                let w = c1 - c0;
                for i in 0..rows {
                    let base = map.row_offset(row0 + i, outer_dims);
                    let dst = &mut buf[i * w..(i + 1) * w];
                    if map.last == 1 {
                        dst.copy_from_slice(&src[base + c0..base + c1]);
                    } else {
                        dst.fill(src[base]);
                    }
                }
            }
            for (m, member) in self.members.iter().enumerate() {
                let (before, rest) = bufs.split_at_mut(m);
                let arg = |a: Arg| -> &[T] {
                    match a {
                        Arg::In(k) => {
                            let k = k as usize;
                            if self.inputs[k].1.full {
                                &ins[k][start..start + len]
                            } else {
                                &in_bufs[k][..len]
                            }
                        }
                        Arg::Member(j) => &before[j as usize][..len],
                    }
                };
                match &member.kind {
                    Kind::Elem(op) => {
                        let dst = &mut rest[0][..len];
                        match op.get().elementwise().expect("fused: an elementwise op") {
                            Elementwise::Unary(f) => f.apply(arg(member.args[0]), dst),
                            Elementwise::Binary(f) => f.apply(arg(member.args[0]), arg(member.args[1]), dst),
                            Elementwise::Ternary(f) => {
                                f.apply(arg(member.args[0]), arg(member.args[1]), arg(member.args[2]), dst)
                            }
                        }
                    }
                    Kind::Copy => rest[0][..len].copy_from_slice(arg(member.args[0])),
                    Kind::Sum { map, all, .. } => {
                        let src = arg(member.args[0]);
                        let acc = outs[m].as_mut().expect("fused: a sink's accumulator");
                        if *all {
                            acc.push(sum_slice(src));
                            continue;
                        }
                        let w = c1 - c0;
                        for i in 0..rows {
                            let seg = &src[i * w..(i + 1) * w];
                            let base = map.row_offset(row0 + i, outer_dims);
                            if map.last == 1 {
                                acc[base + c0..base + c1]
                                    .iter_mut()
                                    .zip(seg)
                                    .for_each(|(a, &v)| *a += v);
                            } else {
                                acc[base] += sum_slice(seg);
                            }
                        }
                        continue;
                    }
                }
                if member.out.is_some() {
                    let o = outs[m].as_mut().expect("fused: an output buffer");
                    o[start..start + len].copy_from_slice(&rest[0][..len]);
                }
            }
        };

        if total > 0 {
            let rows_total = total / n;
            if n >= TILE {
                for row in 0..rows_total {
                    let mut c0 = 0;
                    while c0 < n {
                        let c1 = (c0 + TILE).min(n);
                        tile(row * n + c0, c1 - c0, row, c0, c1, 1);
                        c0 = c1;
                    }
                }
            } else {
                let per = TILE / n;
                let mut r0 = 0;
                while r0 < rows_total {
                    let r1 = (r0 + per).min(rows_total);
                    tile(r0 * n, (r1 - r0) * n, r0, 0, n, r1 - r0);
                    r0 = r1;
                }
            }
        }

        let mut result = Vec::new();
        for (m, member) in self.members.iter().enumerate() {
            let Some(slot) = member.out else { continue };
            let mut data = outs[m].take().expect("fused: an output");
            if let Kind::Sum { all, scale, .. } = &member.kind {
                if *all {
                    data = vec![match data.len() {
                        0 => T::ZERO,
                        1 => data[0],
                        _ => sum_slice(&data),
                    }];
                } else if total == 0 {
                    data.iter_mut().for_each(|d| *d = T::ZERO);
                }
                if let Some(c) = scale {
                    data.iter_mut().for_each(|d| *d *= *c);
                }
            }
            result.push((
                slot,
                Tensor::from_parts(crate::core::shape::shape_of(&member.shape), data),
            ));
        }
        result
    }

    /// Bytes one run reads from and writes to memory: inputs (a broadcast one at its own size)
    /// and written members.
    pub(crate) fn bytes_moved(&self) -> usize {
        let size = std::mem::size_of::<T>();
        let read: usize = self.inputs.iter().map(|(_, _, s)| s.iter().product::<usize>()).sum();
        let written: usize = self
            .members
            .iter()
            .filter(|m| m.out.is_some())
            .map(|m| m.shape.iter().product::<usize>())
            .sum();
        (read + written) * size
    }
}

/// Groups the forward steps of a recorded program (in order) into fused loops; `roots` are the
/// program's results (always written out). A group of one member stays the op's own step.
pub(crate) fn fuse<T: Float>(steps: Vec<Step<T>>, meta: &[NodeMeta], roots: &[usize]) -> Vec<Step<T>> {
    // Who reads each node, and which nodes are results.
    let mut readers: Vec<SmallVec<[usize; 2]>> = vec![SmallVec::new(); meta.len()];
    for step in &steps {
        if let Step::Forward { inputs, node, .. } = step {
            for &j in inputs {
                readers[j as usize].push(*node);
            }
        }
    }
    let mut result = vec![false; meta.len()];
    for &r in roots {
        result[r] = true;
    }

    let mut out: Vec<Step<T>> = Vec::with_capacity(steps.len());
    let mut cur: Option<(Builder<T>, Vec<Step<T>>)> = None;
    let flush = |cur: &mut Option<(Builder<T>, Vec<Step<T>>)>, out: &mut Vec<Step<T>>| {
        let Some((mut b, orig)) = cur.take() else { return };
        if b.group.members.len() < 2 {
            out.extend(orig);
            return;
        }
        for m in &mut b.group.members {
            if m.out.is_none() && (result[m.node] || readers[m.node].iter().any(|r| !b.index.contains_key(r))) {
                m.out = Some(m.node as Slot);
            }
        }
        out.push(Step::Fused {
            group: Box::new(b.group),
            steps: orig,
        });
    };
    for step in steps {
        let Step::Forward { op, inputs, node, .. } = &step else {
            flush(&mut cur, &mut out);
            out.push(step);
            continue;
        };
        let ins: SmallVec<[usize; 4]> = inputs.iter().map(|&j| j as usize).collect();
        let shapes: SmallVec<[&[usize]; 4]> = ins.iter().map(|&j| &meta[j].shape[..]).collect();
        let oshape = &meta[*node].shape[..];
        let (kind, iter_shape): (Option<Class<T>>, &[usize]) = match classify(op, &shapes, oshape) {
            c @ (Class::Elem(_) | Class::Broadcast) => (Some(c), oshape),
            c @ Class::Sum { .. } => (Some(c), shapes[0]),
            Class::Other => (None, oshape),
        };
        let Some(class) = kind.filter(|_| iter_shape.iter().product::<usize>() > 0) else {
            flush(&mut cur, &mut out);
            out.push(step);
            continue;
        };
        let fits = cur
            .as_ref()
            .is_some_and(|(b, _)| b.group.shape == iter_shape && ins.iter().all(|&j| b.readable(j)));
        if !fits {
            flush(&mut cur, &mut out);
            cur = Some((Builder::new(iter_shape), Vec::new()));
        }
        let (b, orig) = cur.as_mut().expect("a group is open");
        let kind = match class {
            Class::Elem(op) => Kind::Elem(op),
            Class::Broadcast => Kind::Copy,
            Class::Sum { keep, mean } => b.sum_kind(&keep, mean),
            Class::Other => unreachable!("not fusable"),
        };
        b.push(*node, kind, &ins, &shapes, oshape);
        orig.push(step);
    }
    flush(&mut cur, &mut out);
    out
}
