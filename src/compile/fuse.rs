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
//!   so nothing in the same group may read them. A sum down to one value of a product (`mul`)
//!   that nothing else reads is the dot product of the product's arguments, with no tile of
//!   products (the same bits).
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
//! The tiles are grouped into fixed chunks of about 64 K elements (fixed by the shape, never by the
//! thread count), which run on the pool; each chunk keeps its own partial sums, combined in chunk
//! order, so a compiled step gives the same bits at any thread count (`tests/determinism.rs`).

use super::plan::{NodeMeta, Slot, Step};
use crate::autodiff::rule::Elementwise;
use crate::autodiff::tape::OpRef;
use crate::core::float::Float;
use crate::ops::layout::{BroadcastToOp, ReshapeOp};
use crate::ops::reduce::{MaxOp, SumOp, SumToOp};
use crate::tensor::kernels::{dot, sum_slice};
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
        // (A value read per row may have more axes than `S`, all of extent 1 there, or be read
        // by row number; its leading axes play no part in the map.)
        let a = &a[a.len().saturating_sub(s.len())..];
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
    /// The argument itself (a `broadcast_to` or a `reshape`: the broadcast happens when the input
    /// is read).
    Copy,
    /// A per-row value spread along the rows (a row value read by a full-shape member).
    Expand,
    /// A sum of the argument down to a smaller shape (`map`: how the result is indexed from `S`;
    /// `all`: down to one element), times `scale` for a mean; complete only when the loop ends.
    Sum { map: Map, all: bool, scale: Option<T> },
    /// The sum over each row (the last axis), times `scale` for a mean: complete at the end of
    /// the tile, so later members of the tile read it.
    RowSum { scale: Option<T> },
    /// The maximum (`min`: minimum) over each row; NaN where a row holds one.
    RowMax { min: bool },
}

/// One member of a group.
pub(crate) struct Member<T: Float> {
    pub(crate) kind: Kind<T>,
    pub(crate) args: SmallVec<[Arg; 3]>,
    /// The recorded node it computes (for an `Expand`: the row value it spreads).
    pub(crate) node: usize,
    /// Where its value goes when something after the group reads it (always, for a sum that
    /// completes with the loop).
    pub(crate) out: Option<Slot>,
    /// The shape of its value.
    pub(crate) shape: Vec<usize>,
    /// One value per row of the iteration shape (a row sum, a row maximum, an op on them),
    /// rather than one per element.
    pub(crate) rowwise: bool,
}

impl<T: Float> Member<T> {
    /// True when the member reads its arguments one value per row (a row sum or maximum reads
    /// whole rows, though it makes one value per row).
    fn reads_rows(&self) -> bool {
        self.rowwise && !matches!(self.kind, Kind::RowSum { .. } | Kind::RowMax { .. })
    }
}

/// A fused loop.
pub(crate) struct Group<T: Float> {
    /// The iteration shape.
    pub(crate) shape: Vec<usize>,
    /// Whole rows in every tile (rows up to [`ROW_MAX`] elements): row sums are complete within
    /// a tile, so the members after them in the tile may read them.
    pub(crate) rows_whole: bool,
    /// The values read from outside, with how each is indexed.
    pub(crate) inputs: Vec<(Slot, Map, Vec<usize>)>,
    pub(crate) members: Vec<Member<T>>,
    /// The tile buffer each member writes ([`NO_BUF`] for a sum that completes with the loop):
    /// buffers are reused once their value's last reader in the tile has run.
    pub(crate) buf_of: Vec<u32>,
    /// Per buffer: true for a buffer of row values.
    pub(crate) buf_rowwise: Vec<bool>,
    /// The members written out (not sums), and the sums, in order.
    pub(crate) written: Vec<u32>,
    pub(crate) sums: Vec<u32>,
    /// Per member: its place in `written` or `sums`.
    pub(crate) pos: Vec<u32>,
    /// Per input: read per element (through a broadcast buffer unless it has the loop's shape),
    /// read per row.
    pub(crate) full_read: Vec<bool>,
    pub(crate) row_read: Vec<bool>,
    /// Per member: written out and read by no later member of the tile, so its kernel writes
    /// straight into the output (no tile buffer, no copy).
    pub(crate) direct: Vec<bool>,
    /// Per member: for a sum down to one value of a product (`mul`) that no other member reads
    /// and nothing after the loop reads, the product member, summed as a dot product of its two
    /// arguments' tiles; that product member is then skipped.
    dot_of: Vec<Option<u32>>,
    /// Per member: a product summed by [`Group::dot_of`]'s sum, never computed.
    skip: Vec<bool>,
    /// Sets of tile buffers kept between runs (one per chunk running at once), so a replay
    /// allocates none.
    scratch: std::sync::Mutex<Vec<Scratch<T>>>,
    /// For a loop of one element: its members as [`Group::run_one`] runs them (built with the
    /// buffers, so a run looks nothing up), and the value array it keeps between runs.
    one: Vec<OneStep<T>>,
    one_vals: std::sync::Mutex<Vec<T>>,
}

/// A member of a loop of one element as [`Group::run_one`] runs it: what it computes, where its
/// arguments lie in the run's value array (the inputs, then the members), and its place in
/// [`Group::written`] or [`Group::sums`] (`u32::MAX`: neither).
struct OneStep<T: Float> {
    what: OneWhat<T>,
    args: [u32; 3],
    pos: u32,
}

/// A [`OneStep`] argument that is the member just before it (in `OneStep::args`).
const PREV: u32 = u32::MAX;

/// What a [`OneStep`] computes.
enum OneWhat<T: Float> {
    /// An elementwise op at one point.
    Elem(OpRef<T>),
    /// Its argument (a broadcast, a reshape, a row value spread along its row).
    Copy,
    /// A row sum of one element, times the mean's scale.
    RowSum(Option<T>),
    /// A row maximum (or minimum) of one element: NaN stays NaN.
    RowMax,
    /// A sink: `all` (a sum down to one value, one partial per tile), or `plain` (a sum that
    /// keeps the last axis, so its element is added as it is).
    Sum { all: bool, plain: bool },
}

/// The tile buffers one chunk of a loop works in.
struct Scratch<T> {
    /// By buffer number ([`Group::buf_of`]).
    bufs: Vec<Vec<T>>,
    /// Broadcast inputs read per element, filled per tile.
    in_bufs: Vec<Vec<T>>,
    /// Inputs read per row, filled per tile.
    in_rows: Vec<Vec<T>>,
}

/// No tile buffer.
const NO_BUF: u32 = u32::MAX;

impl<T: Float> Group<T> {
    /// Assigns tile buffers by liveness within the tile: a member's buffer is free again after
    /// its last reader (never the buffer of one of its own arguments).
    fn plan_buffers(&mut self) {
        let n = self.members.len();
        // A copy (a `broadcast_to` or `reshape` in the loop) that nothing after the loop reads is
        // its argument: its readers read the argument's tile instead, and it is never computed
        // (it was a pass copying a tile; `skip` below).
        let mut copy_of: Vec<Option<Arg>> = vec![None; n];
        for m in 0..n {
            for k in 0..self.members[m].args.len() {
                if let Arg::Member(j) = self.members[m].args[k]
                    && let Some(src) = copy_of[j as usize]
                {
                    self.members[m].args[k] = src;
                }
            }
            let member = &self.members[m];
            if matches!(member.kind, Kind::Copy) && member.out.is_none() && member.args.len() == 1 {
                let same = match member.args[0] {
                    Arg::Member(a) => self.members[a as usize].rowwise == member.rowwise,
                    Arg::In(_) => true,
                };
                if same {
                    copy_of[m] = Some(member.args[0]);
                }
            }
        }
        // What a run touches: the written members, the sums, how each input is read.
        self.pos = vec![u32::MAX; n];
        self.written.clear();
        self.sums.clear();
        self.full_read = vec![false; self.inputs.len()];
        self.row_read = vec![false; self.inputs.len()];
        for (m, member) in self.members.iter().enumerate() {
            if matches!(member.kind, Kind::Sum { .. }) {
                self.pos[m] = self.sums.len() as u32;
                self.sums.push(m as u32);
            } else if member.out.is_some() {
                self.pos[m] = self.written.len() as u32;
                self.written.push(m as u32);
            }
            for a in &member.args {
                if let Arg::In(k) = *a {
                    if member.reads_rows() {
                        self.row_read[k as usize] = true;
                    } else {
                        self.full_read[k as usize] = true;
                    }
                }
            }
        }
        let mut last = vec![0usize; n];
        for (m, member) in self.members.iter().enumerate() {
            last[m] = m;
            for a in &member.args {
                if let Arg::Member(j) = *a {
                    last[j as usize] = m;
                }
            }
        }
        self.direct = (0..n)
            .map(|m| {
                let member = &self.members[m];
                member.out.is_some()
                    && !member.rowwise
                    && last[m] == m
                    && matches!(member.kind, Kind::Elem(_) | Kind::Copy)
            })
            .collect();
        // A product read only by a sum down to one value: the sum is a dot product.
        let mut readers = vec![0usize; n];
        for member in &self.members {
            for a in &member.args {
                if let Arg::Member(j) = *a {
                    readers[j as usize] += 1;
                }
            }
        }
        self.dot_of = vec![None; n];
        self.skip = copy_of.iter().map(Option::is_some).collect();
        for m in 0..n {
            let (Kind::Sum { all: true, .. }, [Arg::Member(j)]) = (&self.members[m].kind, &self.members[m].args[..])
            else {
                continue;
            };
            let p = &self.members[*j as usize];
            let product = match &p.kind {
                Kind::Elem(op) => matches!(op.get().elementwise(), Some(Elementwise::Binary(f)) if f.is_product()),
                _ => false,
            };
            let tiles = p.args.iter().all(|a| match *a {
                Arg::Member(k) => !self.members[k as usize].rowwise,
                Arg::In(_) => true,
            });
            if product
                && tiles
                && !p.rowwise
                && p.out.is_none()
                && !self.direct[*j as usize]
                && readers[*j as usize] == 1
            {
                self.dot_of[m] = Some(*j);
                self.skip[*j as usize] = true;
            }
        }
        let (mut free_full, mut free_row): (Vec<u32>, Vec<u32>) = (Vec::new(), Vec::new());
        self.buf_of = vec![NO_BUF; n];
        self.buf_rowwise.clear();
        for m in 0..n {
            let member = &self.members[m];
            if !matches!(member.kind, Kind::Sum { .. }) && !self.direct[m] {
                let free = if member.rowwise { &mut free_row } else { &mut free_full };
                self.buf_of[m] = free.pop().unwrap_or_else(|| {
                    self.buf_rowwise.push(member.rowwise);
                    (self.buf_rowwise.len() - 1) as u32
                });
            }
            // Buffers whose last reader is this member, and its own when nothing reads it.
            let mut done: SmallVec<[usize; 4]> = member
                .args
                .iter()
                .filter_map(|a| match *a {
                    Arg::Member(j) if last[j as usize] == m => Some(j as usize),
                    _ => None,
                })
                .collect();
            if last[m] == m {
                done.push(m);
            }
            done.sort_unstable();
            done.dedup();
            for j in done {
                let b = self.buf_of[j];
                if b != NO_BUF {
                    if self.members[j].rowwise {
                        free_row.push(b);
                    } else {
                        free_full.push(b);
                    }
                }
            }
        }
        self.plan_one();
    }

    /// The members as value steps, for a loop of one element (none otherwise).
    fn plan_one(&mut self) {
        self.one.clear();
        if self.shape.iter().product::<usize>() != 1 {
            return;
        }
        let n_in = self.inputs.len() as u32;
        for (m, member) in self.members.iter().enumerate() {
            let mut args = [0u32; 3];
            for (slot, a) in args.iter_mut().zip(&member.args) {
                *slot = match *a {
                    Arg::In(k) => k,
                    Arg::Member(j)
                        if j as usize + 1 == m && !matches!(self.members[j as usize].kind, Kind::Sum { .. }) =>
                    {
                        PREV
                    }
                    Arg::Member(j) => n_in + j,
                };
            }
            let what = match &member.kind {
                Kind::Elem(op) => OneWhat::Elem(op.clone()),
                Kind::Copy | Kind::Expand => OneWhat::Copy,
                Kind::RowSum { scale } => OneWhat::RowSum(*scale),
                Kind::RowMax { .. } => OneWhat::RowMax,
                Kind::Sum { map, all, .. } => OneWhat::Sum {
                    all: *all,
                    plain: map.last == 1,
                },
            };
            let placed = self.direct[m] || member.out.is_some() || matches!(member.kind, Kind::Sum { .. });
            self.one.push(OneStep {
                what,
                args,
                pos: if placed { self.pos[m] } else { u32::MAX },
            });
        }
    }
}

/// Elements per chunk of tiles (the unit split across threads; fixed by the shape).
const CHUNK: usize = 1 << 16;

/// Rows up to this many elements are kept whole in a tile (one row of 32 768 `f32` is 128 KiB).
pub(crate) const ROW_MAX: usize = 1 << 15;

/// What the fuser knows about a recorded op.
pub(crate) enum Class<T: Float> {
    Elem(OpRef<T>),
    Broadcast,
    Reshape,
    /// A sum of the input to the output: the kept shape (rank of the input, 1 where summed) and
    /// the mean's divisor.
    Sum {
        keep: Vec<usize>,
        mean: Option<usize>,
    },
    /// A maximum (minimum) over the last axis.
    RowMax {
        min: bool,
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
    } else if any.is::<ReshapeOp>() {
        if x.iter().product::<usize>() == out.iter().product::<usize>() {
            return Class::Reshape;
        }
    } else if let Some(m) = any.downcast_ref::<MaxOp>() {
        let Ok(a) = crate::ops::common::resolve_axis("max", m.axis, x.len()) else {
            return Class::Other;
        };
        if a + 1 == x.len() && x[a] > 0 {
            return Class::RowMax { min: m.min };
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

/// What a node's value is to the group being built.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Role {
    /// One value per element of the iteration shape.
    Full,
    /// One value per row.
    Row,
    /// A sum that completes with the loop: nothing in the group may read it.
    Sink,
}

/// A group being built: members and inputs so far.
pub(crate) struct Builder<T: Float> {
    pub(crate) group: Group<T>,
    /// For each recorded node in the group: its member index and role.
    index: std::collections::HashMap<usize, (u32, Role)>,
    /// The `Expand` member made for a row value, by its member index.
    expanded: std::collections::HashMap<u32, u32>,
    /// The shape of a row value: the iteration shape with a last extent of 1.
    row_shape: Vec<usize>,
}

impl<T: Float> Builder<T> {
    pub(crate) fn new(shape: &[usize]) -> Self {
        let n = shape.last().copied().unwrap_or(1);
        let mut row_shape = shape.to_vec();
        if let Some(l) = row_shape.last_mut() {
            *l = 1;
        }
        Builder {
            group: Group {
                shape: shape.to_vec(),
                rows_whole: n <= ROW_MAX,
                inputs: Vec::new(),
                members: Vec::new(),
                buf_of: Vec::new(),
                buf_rowwise: Vec::new(),
                written: Vec::new(),
                sums: Vec::new(),
                pos: Vec::new(),
                full_read: Vec::new(),
                row_read: Vec::new(),
                direct: Vec::new(),
                dot_of: Vec::new(),
                skip: Vec::new(),
                scratch: Default::default(),
                one: Vec::new(),
                one_vals: Default::default(),
            },
            index: Default::default(),
            expanded: Default::default(),
            row_shape,
        }
    }

    /// The recorded nodes the group computes.
    pub(crate) fn contains(&self, node: usize) -> bool {
        self.index.contains_key(&node)
    }

    fn role(&self, j: usize) -> Option<Role> {
        self.index.get(&j).map(|&(_, r)| r)
    }

    fn input(&mut self, j: usize, shape: &[usize]) -> Arg {
        if let Some(k) = self.group.inputs.iter().position(|(s, _, _)| *s as usize == j) {
            return Arg::In(k as u32);
        }
        let map = Map::new(shape, &self.group.shape);
        self.group.inputs.push((j as Slot, map, shape.to_vec()));
        Arg::In((self.group.inputs.len() - 1) as u32)
    }

    /// Tries to add the node: `class` with inputs `ins` of shapes `shapes`, output shape `out`.
    /// False (and nothing added) when it cannot join this group.
    pub(crate) fn try_push(
        &mut self,
        node: usize,
        class: &Class<T>,
        ins: &[usize],
        shapes: &[&[usize]],
        out: &[usize],
    ) -> bool {
        let s = self.group.shape.clone();
        let whole = self.group.rows_whole;
        let row_distinct = self.row_shape != s;
        let roles: SmallVec<[Option<Role>; 3]> = ins.iter().map(|&j| self.role(j)).collect();
        if roles.contains(&Some(Role::Sink)) {
            return false;
        }
        // (role of the new member, kind, whether its args are read per row)
        let (role, kind): (Role, Kind<T>) = match class {
            Class::Elem(_) | Class::Broadcast if out == &s[..] => {
                // Row values read here must be spread along the rows.
                if roles
                    .iter()
                    .zip(shapes)
                    .any(|(r, sh)| *r == Some(Role::Row) && *sh != &self.row_shape[..])
                {
                    return false;
                }
                let kind = match class {
                    Class::Elem(op) => Kind::Elem(op.clone()),
                    _ => Kind::Copy,
                };
                (Role::Full, kind)
            }
            Class::Elem(_) | Class::Broadcast if whole && row_distinct && self.row_like(out) => {
                // An op on row values: its arguments are row values of its own shape, values
                // the same for every row (one element), or outside values broadcast to rows.
                let ok = roles.iter().zip(shapes).all(|(r, sh)| match r {
                    Some(Role::Row) => *sh == out || sh.iter().product::<usize>() == 1,
                    Some(_) => false,
                    None => {
                        *sh == out
                            || sh.iter().product::<usize>() == 1
                            || (out == &self.row_shape[..] && broadcasts(sh, out))
                    }
                });
                if !ok {
                    return false;
                }
                let kind = match class {
                    Class::Elem(op) => Kind::Elem(op.clone()),
                    _ => Kind::Copy,
                };
                (Role::Row, kind)
            }
            Class::Reshape if whole && roles[0] == Some(Role::Row) && out.iter().product::<usize>() == self.rows() => {
                (Role::Row, Kind::Copy)
            }
            Class::RowMax { min } if whole && shapes[0] == &s[..] && roles[0] != Some(Role::Row) => {
                (Role::Row, Kind::RowMax { min: *min })
            }
            Class::Sum { keep, mean } if shapes[0] == &s[..] && roles[0] != Some(Role::Row) => {
                let row_sum =
                    whole && (keep[..] == self.row_shape[..] || (s.len() <= 1 && keep.iter().all(|&k| k == 1)));
                if row_sum {
                    (
                        Role::Row,
                        Kind::RowSum {
                            scale: mean.map(|n| T::ONE / T::from_usize(n)),
                        },
                    )
                } else {
                    (Role::Sink, self.sum_kind(keep, *mean))
                }
            }
            // The sum of row values down to one element (a mean of per-row losses).
            Class::Sum { keep, mean }
                if whole && roles[0] == Some(Role::Row) && self.row_like(shapes[0]) && keep.iter().all(|&k| k == 1) =>
            {
                (Role::Sink, self.sum_kind(keep, *mean))
            }
            _ => return false,
        };
        // Arguments: members as they are (a row value spread for a full member), outside values
        // by index.
        let mut args: SmallVec<[Arg; 3]> = SmallVec::new();
        for (k, &j) in ins.iter().enumerate() {
            let a = match self.index.get(&j) {
                Some(&(m, Role::Row)) if role == Role::Full => Arg::Member(self.expand(m)),
                Some(&(m, _)) => Arg::Member(m),
                None => self.input(j, shapes[k]),
            };
            args.push(a);
        }
        let m = self.group.members.len() as u32;
        self.index.insert(node, (m, role));
        self.group.members.push(Member {
            kind,
            args,
            node,
            out: (role == Role::Sink).then_some(node as Slot),
            shape: out.to_vec(),
            rowwise: role == Role::Row || (role == Role::Sink && roles[0] == Some(Role::Row)),
        });
        // (A sink over row values is marked rowwise: its argument is read per row.)
        true
    }

    /// The `Expand` member spreading row value `m` along the rows (made once).
    fn expand(&mut self, m: u32) -> u32 {
        if let Some(&e) = self.expanded.get(&m) {
            return e;
        }
        let e = self.group.members.len() as u32;
        let node = self.group.members[m as usize].node;
        self.group.members.push(Member {
            kind: Kind::Expand,
            args: [Arg::Member(m)].into_iter().collect(),
            node,
            out: None,
            shape: self.group.shape.clone(),
            rowwise: false,
        });
        self.expanded.insert(m, e);
        e
    }

    /// True for the shape of a row value: one value per row (the iteration shape with a last
    /// extent of 1, or without its last axis), or one value for every row.
    fn row_like(&self, sh: &[usize]) -> bool {
        let s = &self.group.shape;
        sh == &self.row_shape[..] || (!s.is_empty() && sh == &s[..s.len() - 1]) || sh.iter().product::<usize>() == 1
    }

    /// The number of rows of the iteration shape.
    fn rows(&self) -> usize {
        let n = self.group.shape.last().copied().unwrap_or(1);
        self.group.shape.iter().product::<usize>() / n.max(1)
    }

    /// The kind of a sum member of the group's shape down to `keep`.
    fn sum_kind(&self, keep: &[usize], mean: Option<usize>) -> Kind<T> {
        Kind::Sum {
            map: Map::new(keep, &self.group.shape),
            all: keep.iter().all(|&k| k == 1),
            scale: mean.map(|n| T::ONE / T::from_usize(n)),
        }
    }

    /// The number of members that compute a recorded node (not counting spreads).
    pub(crate) fn ops(&self) -> usize {
        self.group
            .members
            .iter()
            .filter(|m| !matches!(m.kind, Kind::Expand))
            .count()
    }
}

crate::tensor::vmath::wide_fn! {
    /// Each row value spread along its row (`dst` holds `vals.len()` rows of `w`): an
    /// `Expand` member's tile, with the widest stores this CPU has. Measured on the compiled
    /// composed softmax loss at 256x1000, one thread: the spread was ~12% of the loop as a
    /// plain `fill` per row (16-byte stores).
    fn spread_rows(vals: &[T], w: usize, dst: &mut [T]) -> () = spread_rows_in
}

/// [`spread_rows`]' loop.
#[inline(always)]
fn spread_rows_in<T: Float>(vals: &[T], w: usize, dst: &mut [T]) {
    for (row, &v) in dst.chunks_exact_mut(w.max(1)).zip(vals) {
        row.fill(v);
    }
}

crate::tensor::vmath::wide_fn! {
    /// The maximum (`min`: minimum) of a non-empty row; NaN when the row holds one. Lane-wise
    /// selects, so the loop vectorises.
    fn row_max(x: &[T], min: bool) -> T = row_max_lanes
}

/// The lanes of [`row_max_lanes`].
const ROW_MAX_LANES: usize = 16;

/// [`row_max`] of every row of `src` (rows of `w < ROW_MAX_LANES` elements) into `dst`, rows
/// side by side: each row is scanned in the same order as [`row_max_lanes`] scans a row that
/// short (from its first element, then every element), so the bits are the same, but the rows'
/// scans do not wait on each other. One row at a time, a 10-element row cost ~80 ns, most of a
/// 64×10 composed softmax step (a dependent chain of compare-selects, 25 long).
fn row_max_short<T: Float>(src: &[T], w: usize, min: bool, dst: &mut [T]) {
    /// Rows per block (the NaN flags live on the stack).
    const B: usize = 64;
    debug_assert!(w > 0 && w < ROW_MAX_LANES && src.len() == dst.len() * w);
    for (x, d) in src.chunks(B * w).zip(dst.chunks_mut(B)) {
        let r = d.len();
        let mut nan = [false; B];
        for i in 0..r {
            d[i] = x[i * w];
        }
        for j in 0..w {
            for i in 0..r {
                let v = x[i * w + j];
                nan[i] |= v.is_nan();
                let take = if min { v < d[i] } else { v > d[i] };
                d[i] = if take { v } else { d[i] };
            }
        }
        for i in 0..r {
            if nan[i] {
                d[i] = T::NAN;
            }
        }
    }
}

/// [`row_max`] in 16 independent lanes (the same bits at any vector width).
#[inline(always)]
fn row_max_lanes<T: Float>(x: &[T], min: bool) -> T {
    const L: usize = ROW_MAX_LANES;
    let mut acc = [x[0]; L];
    let mut nan = false;
    let chunks = x.chunks_exact(L);
    let rest = chunks.remainder();
    for c in chunks {
        for k in 0..L {
            let v = c[k];
            nan |= v.is_nan();
            let take = if min { v < acc[k] } else { v > acc[k] };
            acc[k] = if take { v } else { acc[k] };
        }
    }
    let mut m = acc[0];
    for &v in acc[1..].iter().chain(rest) {
        nan |= v.is_nan();
        let take = if min { v < m } else { v > m };
        m = if take { v } else { m };
    }
    if nan { T::NAN } else { m }
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
        let rows_total = total.checked_div(n).unwrap_or(0);
        let outer_dims: &[usize] = if r == 0 { &[] } else { &s[..r - 1] };
        let ins: Vec<&[T]> = self.inputs.iter().map(|(x, _, _)| read(*x).data()).collect();
        // Rows per tile (whole rows), or pieces of one row.
        let per = if self.rows_whole { (TILE / n.max(1)).max(1) } else { 1 };
        let tl = if self.rows_whole {
            (per * n).min(total)
        } else {
            TILE.min(total)
        };
        let rl = per.min(rows_total.max(1));

        // Which inputs are read per element, which per row.
        let (full_read, row_read) = (&self.full_read, &self.row_read);

        // An input read per row with one value per row in row order (a row sum without its
        // kept axis) is read by row number, not broadcast.
        let mut row_shape = s.clone();
        if let Some(l) = row_shape.last_mut() {
            *l = 1;
        }
        let row_direct: Vec<bool> = self
            .inputs
            .iter()
            .map(|(_, _, sh)| sh.iter().product::<usize>() == rows_total && !broadcasts(sh, &row_shape))
            .collect();

        // The tiles, and fixed chunks of them (by shape only, never by the thread count: the
        // chunks' sums combine in chunk order, so any number of threads gives the same bits).
        let segs = n.div_ceil(TILE).max(1);
        let n_tiles = if total == 0 {
            0
        } else if self.rows_whole {
            rows_total.div_ceil(per)
        } else {
            rows_total * segs
        };
        let tile_at = |t: usize| -> (usize, usize, usize, usize, usize, usize) {
            if self.rows_whole {
                let r0 = t * per;
                let r1 = (r0 + per).min(rows_total);
                (r0 * n, (r1 - r0) * n, r0, 0, n, r1 - r0)
            } else {
                let (row, k) = (t / segs, t % segs);
                let (c0, c1) = (k * TILE, ((k + 1) * TILE).min(n));
                (row * n + c0, c1 - c0, row, c0, c1, 1)
            }
        };
        let tile_elems = if self.rows_whole { per * n } else { TILE.min(n) }.max(1);
        let mut chunk_tiles = CHUNK.div_ceil(tile_elems).max(1);
        // A sum into a large result keeps one accumulator per chunk: fewer chunks then.
        for m in &self.members {
            if let Kind::Sum { all: false, .. } = m.kind {
                let numel: usize = m.shape.iter().product();
                let max_chunks = (total / numel.max(1)).max(1);
                chunk_tiles = chunk_tiles.max(n_tiles.div_ceil(max_chunks));
            }
        }
        let n_chunks = n_tiles.div_ceil(chunk_tiles);

        // Outputs of written members, each split into the chunks' pieces.
        let mut full_outs: Vec<Option<Vec<T>>> = self
            .written
            .iter()
            .map(|&m| Some(pool::buffer(self.members[m as usize].shape.iter().product())))
            .collect();
        let mut pieces: Vec<Vec<Option<&mut [T]>>> = (0..n_chunks).map(|_| Vec::new()).collect();
        for (w, o) in full_outs.iter_mut().enumerate() {
            let member = &self.members[self.written[w] as usize];
            let mut rest: Option<&mut [T]> = o.as_deref_mut();
            for (c, piece) in pieces.iter_mut().enumerate() {
                let Some(buf) = rest.take() else {
                    piece.push(None);
                    continue;
                };
                if member.rowwise && buf.len() == 1 {
                    // One value for every row: written by the first chunk.
                    piece.push((c == 0).then_some(buf));
                    continue;
                }
                let (first, last) = (
                    tile_at(c * chunk_tiles),
                    tile_at(((c + 1) * chunk_tiles).min(n_tiles) - 1),
                );
                let size = if member.rowwise {
                    last.2 + last.5 - first.2
                } else {
                    last.0 + last.1 - first.0
                };
                let (here, after) = buf.split_at_mut(size);
                piece.push(Some(here));
                rest = Some(after);
            }
        }

        // A loop of 0-d values (one element, every input one value) runs member by member on
        // values, not on one-element tiles.
        let one = total == 1 && n_chunks == 1 && ins.iter().all(|x| x.len() == 1);

        let chunk = |c: usize, mut outs: Vec<Option<&mut [T]>>| -> Vec<Option<Vec<T>>> {
            let (e0, r0_chunk) = {
                let f = tile_at(c * chunk_tiles);
                (f.0, f.2)
            };
            let mut sinks: Vec<Option<Vec<T>>> = self
                .sums
                .iter()
                .map(|&m| {
                    let m = &self.members[m as usize];
                    match &m.kind {
                        Kind::Sum { all: true, .. } => Some(Vec::with_capacity(chunk_tiles)),
                        _ => Some(vec![-T::ZERO; m.shape.iter().product()]),
                    }
                })
                .collect();
            if one {
                self.run_one(&ins, &mut sinks, &mut outs);
                return sinks;
            }
            // Tile buffers: a set kept from an earlier run (no allocation), or new ones.
            let spare = self
                .scratch
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .pop();
            let Scratch {
                mut bufs,
                mut in_bufs,
                mut in_rows,
            } = spare.unwrap_or_else(|| Scratch {
                bufs: self
                    .buf_rowwise
                    .iter()
                    .map(|&r| vec![T::ZERO; if r { rl } else { tl }])
                    .collect(),
                in_bufs: self
                    .inputs
                    .iter()
                    .enumerate()
                    .map(|(k, (_, map, _))| {
                        if map.full || !full_read[k] {
                            Vec::new()
                        } else {
                            vec![T::ZERO; tl]
                        }
                    })
                    .collect(),
                in_rows: row_read
                    .iter()
                    .map(|&r| if r { vec![T::ZERO; rl] } else { Vec::new() })
                    .collect(),
            });
            let mut tile = |start: usize, len: usize, row0: usize, c0: usize, c1: usize, rows: usize| {
                let w = c1 - c0;
                // Broadcast inputs: filled row segment by row segment; inputs read per row, a value
                // per row.
                for (k, (_, map, _)) in self.inputs.iter().enumerate() {
                    let src = ins[k];
                    if full_read[k] && !map.full {
                        let buf = &mut in_bufs[k][..len];
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
                    if row_read[k] {
                        if row_direct[k] {
                            in_rows[k][..rows].copy_from_slice(&src[row0..row0 + rows]);
                        } else {
                            for i in 0..rows {
                                in_rows[k][i] = src[map.row_offset(row0 + i, outer_dims)];
                            }
                        }
                    }
                }
                for (m, member) in self.members.iter().enumerate() {
                    if self.skip[m] {
                        continue;
                    }
                    let id = self.buf_of[m];
                    let mut dst_buf = if id == NO_BUF {
                        Vec::new()
                    } else {
                        std::mem::take(&mut bufs[id as usize])
                    };
                    let rest = std::slice::from_mut(&mut dst_buf);
                    let before = &bufs;
                    let rw = member.reads_rows();
                    let arg = |a: Arg| -> &[T] {
                        match a {
                            Arg::In(k) => {
                                let k = k as usize;
                                if rw {
                                    &in_rows[k][..rows]
                                } else if self.inputs[k].1.full {
                                    &ins[k][start..start + len]
                                } else {
                                    &in_bufs[k][..len]
                                }
                            }
                            Arg::Member(j) => {
                                let j = j as usize;
                                let b = &before[self.buf_of[j] as usize];
                                if self.members[j].rowwise { &b[..rows] } else { &b[..len] }
                            }
                        }
                    };
                    let cnt = if member.rowwise { rows } else { len };
                    // A direct member's kernel writes straight into this chunk's piece of the
                    // output (nothing in the tile reads it); a chunk without a piece has nothing
                    // to write.
                    let mut direct_out = None;
                    if self.direct[m] {
                        match outs[self.pos[m] as usize].as_deref_mut() {
                            Some(o) => direct_out = Some(&mut o[start - e0..start - e0 + len]),
                            None => continue,
                        }
                    }
                    match &member.kind {
                        Kind::Elem(op) => {
                            let dst = match direct_out {
                                Some(d) => d,
                                None => &mut rest[0][..cnt],
                            };
                            match op.get().elementwise().expect("fused: an elementwise op") {
                                Elementwise::Unary(f) => f.apply(arg(member.args[0]), dst),
                                Elementwise::Binary(f) => f.apply(arg(member.args[0]), arg(member.args[1]), dst),
                                Elementwise::Ternary(f) => {
                                    f.apply(arg(member.args[0]), arg(member.args[1]), arg(member.args[2]), dst)
                                }
                            }
                        }
                        Kind::Copy => match direct_out {
                            Some(d) => d.copy_from_slice(arg(member.args[0])),
                            None => rest[0][..cnt].copy_from_slice(arg(member.args[0])),
                        },
                        Kind::Expand => spread_rows(&arg(member.args[0])[..rows], w, &mut rest[0][..len]),
                        Kind::RowSum { scale } => {
                            let src = arg(member.args[0]);
                            let dst = &mut rest[0][..rows];
                            for i in 0..rows {
                                let v = -T::ZERO + sum_slice(&src[i * w..(i + 1) * w]);
                                dst[i] = match scale {
                                    Some(c) => v * *c,
                                    None => v,
                                };
                            }
                        }
                        Kind::RowMax { min } => {
                            let src = arg(member.args[0]);
                            let dst = &mut rest[0][..rows];
                            if w < ROW_MAX_LANES {
                                row_max_short(&src[..rows * w], w, *min, dst);
                            } else {
                                for i in 0..rows {
                                    dst[i] = row_max(&src[i * w..(i + 1) * w], *min);
                                }
                            }
                        }
                        Kind::Sum { map, all, .. } => {
                            let acc = sinks[self.pos[m] as usize]
                                .as_mut()
                                .expect("fused: a sink's accumulator");
                            if let Some(p) = self.dot_of[m].map(|j| &self.members[j as usize]) {
                                acc.push(dot(arg(p.args[0]), arg(p.args[1])));
                                continue;
                            }
                            let src = arg(member.args[0]);
                            if *all {
                                acc.push(sum_slice(src));
                                continue;
                            }
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
                    if self.direct[m] {
                        continue;
                    }
                    if member.out.is_some()
                        && let Some(o) = outs[self.pos[m] as usize].as_deref_mut()
                    {
                        if member.rowwise && self.members[m].shape.iter().product::<usize>() == 1 {
                            o[0] = rest[0][0]; // one value for every row
                        } else if member.rowwise {
                            o[row0 - r0_chunk..row0 - r0_chunk + rows].copy_from_slice(&rest[0][..rows]);
                        } else {
                            o[start - e0..start - e0 + len].copy_from_slice(&rest[0][..len]);
                        }
                    }
                    bufs[id as usize] = dst_buf;
                }
            };

            for t in c * chunk_tiles..((c + 1) * chunk_tiles).min(n_tiles) {
                let (start, len, row0, c0, c1, rows) = tile_at(t);
                tile(start, len, row0, c0, c1, rows);
            }
            self.scratch
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(Scratch { bufs, in_bufs, in_rows });
            sinks
        };
        let work = total.saturating_mul(self.members.len());
        let jobs: Vec<(usize, Vec<Option<&mut [T]>>)> = pieces.into_iter().enumerate().collect();
        let chunk_sinks = crate::tensor::parallel::map_owned(jobs, work, |(c, outs)| chunk(c, outs));

        let mut result = Vec::with_capacity(self.written.len() + self.sums.len());
        for (w, &m) in self.written.iter().enumerate() {
            let member = &self.members[m as usize];
            let data = full_outs[w].take().expect("fused: an output");
            result.push((
                member.node as Slot,
                Tensor::from_parts(crate::core::shape::shape_of(&member.shape), data),
            ));
        }
        for (k, &m) in self.sums.iter().enumerate() {
            let member = &self.members[m as usize];
            let mut data = match &member.kind {
                Kind::Sum { all: true, .. } => {
                    let parts: Vec<T> = chunk_sinks
                        .iter()
                        .flat_map(|s| s[k].iter().flatten().copied())
                        .collect();
                    vec![match parts.len() {
                        0 => T::ZERO,
                        1 => parts[0],
                        _ => sum_slice(&parts),
                    }]
                }
                _ => {
                    let mut parts = chunk_sinks
                        .iter()
                        .map(|s| s[k].as_ref().expect("fused: a sink's accumulator"));
                    let mut acc = parts
                        .next()
                        .cloned()
                        .unwrap_or_else(|| vec![-T::ZERO; member.shape.iter().product()]);
                    for p in parts {
                        acc.iter_mut().zip(p).for_each(|(a, &v)| *a += v);
                    }
                    if total == 0 {
                        acc.iter_mut().for_each(|d| *d = T::ZERO);
                    }
                    acc
                }
            };
            if let Kind::Sum { scale: Some(c), .. } = &member.kind {
                data.iter_mut().for_each(|d| *d *= *c);
            }
            result.push((
                member.node as Slot,
                Tensor::from_parts(crate::core::shape::shape_of(&member.shape), data),
            ));
        }
        result
    }

    /// [`run`](Self::run)'s loop for a group of 0-d values (`ins`: one value each): each member
    /// at one element ([`UnaryKernel::one`](crate::autodiff::rule::UnaryKernel::one) and its
    /// kin, through one virtual call per member), the values in one array kept between runs
    /// instead of in tile buffers. The same arithmetic as the tile loop on a one-element tile —
    /// sums and row sums of one value go through `sum_slice` as there — so the same bits. On a 1000-op scalar chain (W5) a member cost ~30 ns through
    /// the tile loop (buffers swapped, slices cut, a vector kernel dispatched for one element).
    fn run_one(&self, ins: &[&[T]], sinks: &mut [Option<Vec<T>>], outs: &mut [Option<&mut [T]>]) {
        let lock = || self.one_vals.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut vals = std::mem::take(&mut *lock());
        vals.clear();
        vals.extend(ins.iter().map(|x| x[0]));
        let n_in = vals.len();
        vals.resize(n_in + self.one.len(), T::ZERO);
        // The previous member's value stays in a register: in a chain it is the next member's
        // argument, and a round trip through `vals` would add a store-to-load delay per member.
        let mut prev = T::ZERO;
        for (m, st) in self.one.iter().enumerate() {
            let [a, b, c] = st.args.map(|k| if k == PREV { prev } else { vals[k as usize] });
            let v = match &st.what {
                OneWhat::Elem(op) => op.get().elementwise_one(a, b, c),
                OneWhat::Copy => a,
                OneWhat::RowSum(scale) => {
                    let v = -T::ZERO + sum_slice(&[a]);
                    match scale {
                        Some(k) => v * *k,
                        None => v,
                    }
                }
                OneWhat::RowMax => {
                    if a.is_nan() {
                        T::NAN
                    } else {
                        a
                    }
                }
                OneWhat::Sum { all, plain } => {
                    let acc = sinks[st.pos as usize].as_mut().expect("fused: a sink's accumulator");
                    if *all {
                        acc.push(sum_slice(&[a]));
                    } else if *plain {
                        acc[0] += a;
                    } else {
                        acc[0] += sum_slice(&[a]);
                    }
                    continue;
                }
            };
            vals[n_in + m] = v;
            prev = v;
            if st.pos != u32::MAX
                && let Some(o) = outs[st.pos as usize].as_deref_mut()
            {
                o[0] = v;
            }
        }
        *lock() = vals;
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
/// program's results (always written out). A group of one op stays the op's own step.
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
        if b.ops() < 2 {
            out.extend(orig);
            return;
        }
        let inside = |r: &usize| b.contains(*r);
        let written: Vec<bool> = b
            .group
            .members
            .iter()
            .map(|m| !matches!(m.kind, Kind::Expand) && (result[m.node] || readers[m.node].iter().any(|r| !inside(r))))
            .collect();
        for (m, w) in b.group.members.iter_mut().zip(written) {
            if w && m.out.is_none() {
                m.out = Some(m.node as Slot);
            }
        }
        b.group.plan_buffers();
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
        let class = classify(op, &shapes, oshape);
        // The shape a new group would iterate over.
        let iter_shape: Option<&[usize]> = match class {
            Class::Elem(_) | Class::Broadcast => Some(oshape),
            Class::Sum { .. } | Class::RowMax { .. } => Some(shapes[0]),
            Class::Reshape | Class::Other => None,
        };
        let Some(iter_shape) = iter_shape.filter(|s| s.iter().product::<usize>() > 0) else {
            if let Some((b, orig)) = cur.as_mut()
                && matches!(class, Class::Reshape)
                && b.try_push(*node, &class, &ins, &shapes, oshape)
            {
                orig.push(step);
                continue;
            }
            flush(&mut cur, &mut out);
            out.push(step);
            continue;
        };
        if let Some((b, orig)) = cur.as_mut()
            && b.try_push(*node, &class, &ins, &shapes, oshape)
        {
            orig.push(step);
            continue;
        }
        flush(&mut cur, &mut out);
        let mut b = Builder::new(iter_shape);
        if b.try_push(*node, &class, &ins, &shapes, oshape) {
            cur = Some((b, vec![step]));
        } else {
            out.push(step);
        }
    }
    flush(&mut cur, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Short rows scanned side by side give the bits of the one-row lane scan: ties between
    /// signed zeros, NaN anywhere in a row, infinities, both directions, 1 to 15 elements.
    #[test]
    fn short_row_maxima_side_by_side_are_the_lane_scan() {
        let mut r = crate::rng::Rng::new(7);
        for w in 1..ROW_MAX_LANES {
            let rows = 70; // more than one block of 64
            let x: Vec<f64> = (0..rows * w)
                .map(|i| match (i * 7 + w) % 11 {
                    0 => -0.0,
                    1 => 0.0,
                    2 if i % 5 == 0 => f64::NAN,
                    3 => f64::INFINITY,
                    4 => f64::NEG_INFINITY,
                    _ => (r.normal() * 3.0).round(),
                })
                .collect();
            for min in [false, true] {
                let mut side = vec![0.0; rows];
                row_max_short(&x, w, min, &mut side);
                for (i, &got) in side.iter().enumerate() {
                    let want = row_max_lanes(&x[i * w..(i + 1) * w], min);
                    assert_eq!(got.to_bits(), want.to_bits(), "row {i} of width {w}, min {min}");
                }
            }
        }
    }
}
