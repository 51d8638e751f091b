// Behaviour tests of the Raft core, named Method_Scenario, each citing the
// section of the Raft paper ("§") or Ongaro's thesis ("thesis §") it checks.
#include <gtest/gtest.h>

#include "raft/core/raw_node.h"
#include "raft/core/test_cluster.h"

namespace lockd::raft {
namespace {

using testing::Cluster;

Message Msg(MessageType t, uint64_t from, uint64_t to, uint64_t term) {
  Message m;
  m.type = t;
  m.from = from;
  m.to = to;
  m.term = term;
  return m;
}

// Runs Readys and deliveries in lock step until `id` leads, stopping before
// its no-op is replicated.
void RunUntilLeader(Cluster& c, uint64_t id) {
  for (int i = 0; i < 20 && c.raft(id).state() != StateType::kLeader; ++i) {
    for (uint64_t n : c.ids()) c.ProcessReady(n);
    c.Deliver();
  }
  ASSERT_EQ(c.raft(id).state(), StateType::kLeader);
}

// Elects node 1 in a bootstrapped cluster and settles everything.
void ElectOne(Cluster& c) {
  c.Stabilize();
  c.Elect(1);
  c.Stabilize();
  ASSERT_EQ(c.Leader(), 1u);
}

TEST(Campaign_ThreeNodes, ElectsLeaderWithPreVote) {  // §5.2, thesis §9.6
  Cluster c;
  c.Bootstrap({1, 2, 3});
  ElectOne(c);
  EXPECT_EQ(c.raft(1).term(), 2u);
  EXPECT_EQ(c.raft(2).lead(), 1u);
  EXPECT_EQ(c.raft(3).lead(), 1u);
}

TEST(Tick_ElectionTimeout, FollowerCampaignsWithinRandomizedTimeout) {  // §5.2
  Cluster c;
  c.Bootstrap({1, 2, 3});
  c.Stabilize();
  const int timeout = c.raft(1).randomized_election_timeout();
  EXPECT_GE(timeout, 10);
  EXPECT_LT(timeout, 20);
  c.Tick(1, timeout - 1);
  EXPECT_EQ(c.raft(1).state(), StateType::kFollower);
  c.Tick(1, 1);
  EXPECT_EQ(c.raft(1).state(), StateType::kPreCandidate);
}

TEST(Config_Seed, SameSeedSameElectionTimeout) {  // determinism
  Cluster a, b;
  a.Bootstrap({1, 2, 3});
  b.Bootstrap({1, 2, 3});
  EXPECT_EQ(a.raft(2).randomized_election_timeout(),
            b.raft(2).randomized_election_timeout());
}

TEST(Campaign_PreVote, PartitionedNodeDoesNotInflateTerm) {  // thesis §9.6
  Cluster c;
  c.Bootstrap({1, 2, 3});
  ElectOne(c);
  c.Isolate(3);
  for (int i = 0; i < 100; ++i) {
    c.Tick(3);
    c.Stabilize();
  }
  EXPECT_EQ(c.raft(3).term(), 2u);  // only pre-voted
  c.Heal();
  c.Tick(1, 1);
  c.Stabilize();
  EXPECT_EQ(c.Leader(), 1u);
  EXPECT_EQ(c.raft(1).term(), 2u);
}

TEST(Step_CheckQuorum, LeaderStepsDownWithoutQuorum) {  // thesis §6.2
  Cluster c;
  c.Bootstrap({1, 2, 3});
  ElectOne(c);
  c.Isolate(1);
  for (int i = 0; i < 25; ++i) {
    c.Tick(1);
    c.Stabilize();
  }
  EXPECT_EQ(c.raft(1).state(), StateType::kFollower);
}

TEST(Step_LeaderLease, FollowerIgnoresDisruptiveVote) {  // thesis §4.2.3
  Cluster c;
  c.Bootstrap({1, 2, 3});
  ElectOne(c);
  // A vote request at a higher term while 2 heard from the leader recently.
  Message m = Msg(MessageType::kVote, 3, 2, 10);
  m.index = 100;
  m.log_term = 10;
  ASSERT_TRUE(c.raw(2).Step(m).ok());
  EXPECT_EQ(c.raft(2).term(), 2u);
  EXPECT_EQ(c.raft(2).lead(), 1u);
}

TEST(Step_Vote, RejectsCandidateWithStaleLog) {  // §5.4.1
  Cluster c;
  c.Bootstrap({1, 2, 3});
  ElectOne(c);
  ASSERT_TRUE(c.raw(1).Propose("x").ok());
  c.Stabilize();
  c.Tick(2, 30);  // leave the lease
  Message m = Msg(MessageType::kVote, 3, 2, 5);
  m.index = 1;
  m.log_term = 1;
  ASSERT_TRUE(c.raw(2).Step(m).ok());
  ASSERT_TRUE(c.ProcessReady(2));
  ASSERT_FALSE(c.queue().empty());
  EXPECT_TRUE(c.queue().back().reject);
  EXPECT_EQ(c.raft(2).vote(), kNone);
}

TEST(Propose_Replication, CommitsOnQuorumAndApplies) {  // §5.3
  Cluster c;
  c.Bootstrap({1, 2, 3});
  ElectOne(c);
  ASSERT_TRUE(c.raw(1).Propose("hello").ok());
  c.Stabilize();
  for (uint64_t id : {1, 2, 3}) {
    ASSERT_EQ(c.node(id).applied.size(), 1u) << id;
    EXPECT_EQ(c.node(id).applied[0].data, "hello");
  }
}

TEST(Propose_NotLeader, ReturnsUnavailableWithLeaderHint) {
  Cluster c;
  c.Bootstrap({1, 2, 3});
  ElectOne(c);
  absl::Status s = c.raw(2).Propose("x");
  EXPECT_TRUE(absl::IsUnavailable(s));
  EXPECT_NE(s.message().find("leader is 1"), absl::string_view::npos);
}

TEST(Propose_NoLeader, ReturnsUnavailable) {
  Cluster c;
  c.Bootstrap({1, 2, 3});
  EXPECT_TRUE(absl::IsUnavailable(c.raw(1).Propose("x")));
}

TEST(Propose_UncommittedLimit, DropsWithResourceExhausted) {  // flow control
  Cluster c([](Config* cfg) { cfg->max_uncommitted_entries_bytes = 10; });
  c.Bootstrap({1, 2, 3});
  ElectOne(c);
  c.Isolate(1);  // nothing commits
  EXPECT_TRUE(c.raw(1).Propose("12345678").ok());
  EXPECT_TRUE(absl::IsResourceExhausted(c.raw(1).Propose("12345678")));
  c.Heal();
  c.Stabilize();
  c.Tick(1);
  c.Stabilize();
  EXPECT_TRUE(c.raw(1).Propose("12345678").ok());
}

TEST(BecomeLeader_Noop, NewLeaderAppendsEmptyEntryOfItsTerm) {  // §8
  Cluster c;
  c.Bootstrap({1, 2, 3});
  ElectOne(c);
  const RaftLog& log = c.raft(1).raft_log();
  EXPECT_EQ(log.LastIndex(), 4u);
  EXPECT_EQ(log.ZeroTermOnError(4), 2u);
  EXPECT_EQ(log.committed(), 4u);
}

TEST(MaybeCommit_OldTerm, DoesNotCommitPreviousTermByCounting) {  // §5.4.2
  // Without leases, so that 2 can be elected on demand.
  Cluster c([](Config* cfg) { cfg->check_quorum = false; });
  c.Bootstrap({1, 2, 3});
  ElectOne(c);
  // Leader 1 appends an entry only it has.
  c.Isolate(1);
  ASSERT_TRUE(c.raw(1).Propose("orphan").ok());
  c.Stabilize();
  c.DropPending();
  // 2 becomes leader at a higher term without the entry; then 1 returns.
  c.Heal();
  c.Isolate(1);
  c.Elect(2);
  c.Stabilize();
  ASSERT_EQ(c.Leader(), 2u);
  c.Heal();
  c.Stabilize();
  c.Tick(2, 2);
  c.Stabilize();
  // The orphan entry of term 2 was overwritten, never committed.
  for (uint64_t id : {1, 2, 3}) EXPECT_TRUE(c.node(id).applied.empty()) << id;
  EXPECT_EQ(c.raft(1).raft_log().ZeroTermOnError(5), c.raft(2).term());
}

TEST(Step_AppendReject, FastBacktracksWithHint) {  // §5.3 optimization
  Cluster c([](Config* cfg) { cfg->max_size_per_msg_bytes = 1; });
  c.Bootstrap({1, 2, 3});
  ElectOne(c);
  c.Isolate(3);
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(c.raw(1).Propose("e").ok());
  c.Stabilize();
  c.Heal();
  int rounds = 0;
  while (c.raft(3).raft_log().LastIndex() < c.raft(1).raft_log().LastIndex() &&
         rounds < 100) {
    c.Tick(1);
    c.Stabilize();
    ++rounds;
  }
  EXPECT_EQ(c.raft(3).raft_log().LastIndex(), c.raft(1).raft_log().LastIndex());
  EXPECT_LT(rounds, 5);
}

TEST(MaybeSendAppend_Inflights, WindowBoundsInFlightMessages) {  // thesis §10.2
  Cluster c([](Config* cfg) {
    cfg->max_inflight_msgs = 2;
    cfg->max_size_per_msg_bytes = 1;
  });
  c.Bootstrap({1, 2, 3});
  ElectOne(c);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(c.raw(1).Propose("e").ok());
  ASSERT_TRUE(c.ProcessReady(1));
  int apps_to_2 = 0;
  for (const Message& m : c.queue()) {
    if (m.to == 2 && m.type == MessageType::kApp && !m.entries.empty()) {
      ++apps_to_2;
    }
  }
  EXPECT_EQ(apps_to_2, 2);
  EXPECT_TRUE(c.raft(1).tracker().progress.at(2).inflights.Full());
  c.Stabilize();
  EXPECT_EQ(c.node(2).applied.size(), 10u);
}

TEST(Advance_LeaderSelfAck, LeaderCountsItselfOnlyAfterPersisting) {
  // Thesis §10.2.1: the leader may send before persisting, but its own
  // copy only counts once durable.
  Cluster c;
  c.Bootstrap({1});
  c.Stabilize();
  c.Elect(1);
  EXPECT_EQ(c.raft(1).state(), StateType::kLeader);
  EXPECT_EQ(c.raft(1).raft_log().committed(), 1u);
  c.Stabilize();
  EXPECT_EQ(c.raft(1).raft_log().committed(), 2u);
  ASSERT_TRUE(c.raw(1).Propose("x").ok());
  EXPECT_EQ(c.raft(1).raft_log().committed(), 2u);
  c.Stabilize();
  EXPECT_EQ(c.raft(1).raft_log().committed(), 3u);
}

TEST(ReadIndex_Leader, ConfirmsWithHeartbeatQuorum) {  // thesis §6.4
  Cluster c;
  c.Bootstrap({1, 2, 3});
  ElectOne(c);
  ASSERT_TRUE(c.raw(1).ReadIndex("ctx1").ok());
  ASSERT_TRUE(c.ProcessReady(1));
  EXPECT_TRUE(c.node(1).read_states.empty());  // needs acks first
  c.Stabilize();
  ASSERT_EQ(c.node(1).read_states.size(), 1u);
  EXPECT_EQ(c.node(1).read_states[0].index, 4u);
  EXPECT_EQ(c.node(1).read_states[0].request_ctx, "ctx1");
}

TEST(ReadIndex_Follower, ForwardsToLeader) {  // thesis §6.4
  Cluster c;
  c.Bootstrap({1, 2, 3});
  ElectOne(c);
  ASSERT_TRUE(c.raw(2).ReadIndex("f").ok());
  c.Stabilize();
  ASSERT_EQ(c.node(2).read_states.size(), 1u);
  EXPECT_EQ(c.node(2).read_states[0].index, 4u);
}

TEST(ReadIndex_NewLeader, WaitsForCommitInItsTerm) {  // thesis §6.4 step 1
  Cluster c;
  c.Bootstrap({1, 2, 3});
  c.Stabilize();
  c.Elect(1);
  RunUntilLeader(c, 1);
  ASSERT_LT(c.raft(1).raft_log().committed(), 4u);
  ASSERT_TRUE(c.raw(1).ReadIndex("early").ok());
  c.Stabilize();
  ASSERT_EQ(c.node(1).read_states.size(), 1u);
  EXPECT_GE(c.node(1).read_states[0].index, 4u);
}

TEST(ReadIndex_Partitioned, StaleLeaderCannotServe) {  // thesis §6.4
  Cluster c;
  c.Bootstrap({1, 2, 3});
  ElectOne(c);
  c.Isolate(1);
  ASSERT_TRUE(c.raw(1).ReadIndex("stale").ok());
  c.Stabilize();
  EXPECT_TRUE(c.node(1).read_states.empty());
}

TEST(TransferLeadership_CaughtUp, TransfereeBecomesLeader) {  // thesis §3.10
  Cluster c;
  c.Bootstrap({1, 2, 3});
  ElectOne(c);
  ASSERT_TRUE(c.raw(1).TransferLeadership(3).ok());
  c.Stabilize();
  EXPECT_EQ(c.Leader(), 3u);
  EXPECT_EQ(c.raft(1).state(), StateType::kFollower);
}

TEST(TransferLeadership_InProgress, RejectsProposals) {  // thesis §3.10
  Cluster c;
  c.Bootstrap({1, 2, 3});
  ElectOne(c);
  c.Isolate(3);
  ASSERT_TRUE(c.raw(1).Propose("x").ok());
  c.Stabilize();
  ASSERT_TRUE(c.raw(1).TransferLeadership(3).ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(c.raw(1).Propose("y")));
  // Aborted after an election timeout; proposals flow again.
  for (int i = 0; i < 10; ++i) {
    c.Tick(1);
    c.Stabilize();
  }
  EXPECT_EQ(c.raft(1).lead_transferee(), kNone);
  EXPECT_TRUE(c.raw(1).Propose("z").ok());
}

TEST(TransferLeadership_Learner, IsRejected) {
  Cluster c;
  c.Bootstrap({1, 2, 3});
  ElectOne(c);
  c.AddEmptyNode(4);
  ConfChange cc;
  cc.changes.push_back({ConfChangeType::kAddLearnerNode, 4});
  ASSERT_TRUE(c.raw(1).ProposeConfChange(cc).ok());
  c.Stabilize();
  EXPECT_TRUE(absl::IsInvalidArgument(c.raw(1).TransferLeadership(4)));
}

TEST(ProposeConfChange_Learner,
     LearnerReplicatesButDoesNotVote) {  // thesis §4.2.1
  Cluster c;
  c.Bootstrap({1, 2, 3});
  ElectOne(c);
  c.AddEmptyNode(4);
  ConfChange cc;
  cc.changes.push_back({ConfChangeType::kAddLearnerNode, 4});
  ASSERT_TRUE(c.raw(1).ProposeConfChange(cc).ok());
  c.Stabilize();
  ASSERT_TRUE(c.raw(1).Propose("data").ok());
  c.Stabilize();
  EXPECT_EQ(c.node(4).applied.size(), 1u);
  EXPECT_TRUE(c.raft(4).is_learner());
  c.Tick(4, 100);
  EXPECT_EQ(c.raft(4).state(), StateType::kFollower);
  // Promote.
  ConfChange promote;
  promote.changes.push_back({ConfChangeType::kAddNode, 4});
  ASSERT_TRUE(c.raw(1).ProposeConfChange(promote).ok());
  c.Stabilize();
  EXPECT_FALSE(c.raft(4).is_learner());
  EXPECT_EQ(c.raft(1).tracker().config.voters.incoming.size(), 4u);
}

TEST(ProposeConfChange_Pending,
     RefusesSecondChangeUntilApplied) {  // thesis §4.1
  Cluster c;
  c.Bootstrap({1, 2, 3});
  ElectOne(c);
  ConfChange cc;
  cc.changes.push_back({ConfChangeType::kAddLearnerNode, 4});
  c.AddEmptyNode(4);
  ASSERT_TRUE(c.raw(1).ProposeConfChange(cc).ok());
  ConfChange cc2;
  cc2.changes.push_back({ConfChangeType::kAddLearnerNode, 5});
  EXPECT_TRUE(absl::IsFailedPrecondition(c.raw(1).ProposeConfChange(cc2)));
}

TEST(ProposeConfChange_BeforeOwnTermCommit, IsRefused) {  // thesis §4.1 bug fix
  Cluster c;
  c.Bootstrap({1, 2, 3});
  c.Stabilize();
  c.Elect(1);
  RunUntilLeader(c, 1);
  ASSERT_LT(c.raft(1).raft_log().committed(), 4u);
  ConfChange cc;
  cc.changes.push_back({ConfChangeType::kRemoveNode, 3});
  EXPECT_TRUE(absl::IsFailedPrecondition(c.raw(1).ProposeConfChange(cc)));
}

TEST(ProposeConfChange_Invalid, RemovingAllVotersIsRejected) {
  Cluster c;
  c.Bootstrap({1});
  c.Stabilize();
  c.Elect(1);
  c.Stabilize();
  ConfChange cc;
  cc.changes.push_back({ConfChangeType::kRemoveNode, 1});
  EXPECT_TRUE(absl::IsInvalidArgument(c.raw(1).ProposeConfChange(cc)));
}

TEST(ProposeConfChange_Joint, EntersAndAutoLeaves) {  // thesis §4.3
  Cluster c;
  c.Bootstrap({1, 2, 3});
  ElectOne(c);
  c.AddEmptyNode(4);
  ConfChange add;
  add.changes.push_back({ConfChangeType::kAddLearnerNode, 4});
  ASSERT_TRUE(c.raw(1).ProposeConfChange(add).ok());
  c.Stabilize();
  ConfChange swap;
  swap.changes.push_back({ConfChangeType::kAddNode, 4});
  swap.changes.push_back({ConfChangeType::kRemoveNode, 3});
  ASSERT_TRUE(c.raw(1).ProposeConfChange(swap).ok());
  c.Stabilize();
  const TrackerConfig& cfg = c.raft(1).tracker().config;
  EXPECT_FALSE(cfg.voters.IsJoint());
  EXPECT_EQ(cfg.voters.incoming, (MajorityConfig{1, 2, 4}));
}

TEST(ProposeConfChange_ExplicitJoint, WaitsForExplicitLeave) {  // thesis §4.3
  Cluster c;
  c.Bootstrap({1, 2, 3});
  ElectOne(c);
  ConfChange cc;
  cc.transition = ConfChangeTransition::kJointExplicit;
  cc.changes.push_back({ConfChangeType::kRemoveNode, 3});
  ASSERT_TRUE(c.raw(1).ProposeConfChange(cc).ok());
  c.Stabilize();
  EXPECT_TRUE(c.raft(1).tracker().config.voters.IsJoint());
  EXPECT_TRUE(absl::IsFailedPrecondition(c.raw(1).ProposeConfChange(ConfChange{
      ConfChangeTransition::kAuto, {{ConfChangeType::kAddNode, 5}}, ""})));
  ASSERT_TRUE(c.raw(1).ProposeConfChange(ConfChange{}).ok());
  c.Stabilize();
  EXPECT_FALSE(c.raft(1).tracker().config.voters.IsJoint());
  EXPECT_EQ(c.raft(1).tracker().config.voters.incoming, (MajorityConfig{1, 2}));
}

TEST(ApplyConfChange_RemoveLeader, LeaderHandsOffLeadership) {  // thesis §4.2.2
  Cluster c;
  c.Bootstrap({1, 2, 3});
  ElectOne(c);
  ConfChange cc;
  cc.changes.push_back({ConfChangeType::kRemoveNode, 1});
  ASSERT_TRUE(c.raw(1).ProposeConfChange(cc).ok());
  c.Stabilize();
  const uint64_t lead = c.Leader();
  EXPECT_TRUE(lead == 2 || lead == 3) << lead;
  EXPECT_TRUE(absl::IsUnavailable(c.raw(1).Propose("x")));
  // The removed node never campaigns.
  c.Tick(1, 100);
  EXPECT_EQ(c.raft(1).state(), StateType::kFollower);
  ASSERT_TRUE(c.raw(lead).Propose("after").ok());
  c.Stabilize();
  EXPECT_EQ(c.node(2).applied.back().data, "after");
}

TEST(IsMember_AfterRemoval, IsFalseOnceApplied) {  // thesis §4.2.2
  Cluster c;
  c.Bootstrap({1, 2, 3});
  ElectOne(c);
  EXPECT_TRUE(c.raw(3).IsMember());
  ConfChange cc;
  cc.changes.push_back({ConfChangeType::kRemoveNode, 3});
  ASSERT_TRUE(c.raw(1).ProposeConfChange(cc).ok());
  c.Stabilize();
  c.Tick(1);
  c.Stabilize();
  EXPECT_FALSE(c.raw(3).IsMember());
  EXPECT_TRUE(c.raw(2).IsMember());
}

TEST(ReportUnreachable_Replicate, FallsBackToProbe) {  // thesis §10.2
  Cluster c;
  c.Bootstrap({1, 2, 3});
  ElectOne(c);
  ASSERT_EQ(c.raft(1).tracker().progress.at(2).state,
            ProgressState::kReplicate);
  c.raw(1).ReportUnreachable(2);
  EXPECT_EQ(c.raft(1).tracker().progress.at(2).state, ProgressState::kProbe);
}

TEST(ReportSnapshot_Failure, RetriesViaProbe) {  // §7
  Cluster c;
  c.Bootstrap({1, 2, 3});
  ElectOne(c);
  c.Isolate(3);
  ASSERT_TRUE(c.raw(1).Propose("e").ok());
  c.Stabilize();
  Cluster::Node& n1 = c.node(1);
  const uint64_t applied = c.raft(1).raft_log().applied();
  ASSERT_TRUE(n1.storage->CreateSnapshot(applied, &n1.conf, "s").ok());
  ASSERT_TRUE(n1.storage->Compact(applied).ok());
  c.Heal();
  c.Tick(1);
  // Run until the leader sends the snapshot, then lose it in transit.
  for (int i = 0; i < 10 && c.raft(1).tracker().progress.at(3).state !=
                                ProgressState::kSnapshot;
       ++i) {
    for (uint64_t id : c.ids()) c.ProcessReady(id);
    c.Deliver();
  }
  ASSERT_EQ(c.raft(1).tracker().progress.at(3).state, ProgressState::kSnapshot);
  for (uint64_t id : c.ids()) c.ProcessReady(id);
  c.DropPending();
  c.raw(1).ReportSnapshot(3, false);
  EXPECT_EQ(c.raft(1).tracker().progress.at(3).state, ProgressState::kProbe);
  for (int i = 0; i < 5; ++i) {
    c.Tick(1);
    c.Stabilize();
    c.raw(1).ReportSnapshot(3, true);
  }
  c.Stabilize();
  EXPECT_EQ(c.raft(3).raft_log().committed(), c.raft(1).raft_log().committed());
}

TEST(Step_RemovedNode, CannotDisruptWithVotes) {  // thesis §4.2.3
  Cluster c;
  c.Bootstrap({1, 2, 3});
  ElectOne(c);
  c.Isolate(3);
  ConfChange cc;
  cc.changes.push_back({ConfChangeType::kRemoveNode, 3});
  ASSERT_TRUE(c.raw(1).ProposeConfChange(cc).ok());
  c.Stabilize();
  c.Heal();
  // 3 doesn't know it was removed and keeps campaigning.
  for (int i = 0; i < 60; ++i) {
    c.Tick(3);
    c.Tick(1);
    c.Stabilize();
  }
  EXPECT_EQ(c.Leader(), 1u);
  EXPECT_EQ(c.raft(1).term(), 2u);
}

TEST(Snapshot_LaggingFollower, ReceivesSnapshotAfterCompaction) {  // §7
  Cluster c;
  c.Bootstrap({1, 2, 3});
  ElectOne(c);
  c.Isolate(3);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(c.raw(1).Propose("e").ok());
  c.Stabilize();
  Cluster::Node& n1 = c.node(1);
  const uint64_t applied = c.raft(1).raft_log().applied();
  ASSERT_TRUE(n1.storage->CreateSnapshot(applied, &n1.conf, "snap").ok());
  ASSERT_TRUE(n1.storage->Compact(applied).ok());
  c.Heal();
  for (int i = 0; i < 5; ++i) {
    c.Tick(1);
    c.Stabilize();
    // The transport reports delivery.
    c.raw(1).ReportSnapshot(3, true);
    c.Stabilize();
  }
  EXPECT_EQ(c.raft(3).raft_log().committed(), c.raft(1).raft_log().committed());
  EXPECT_EQ(c.node(3).storage->FirstIndex(), applied + 1);
}

TEST(Restart_PersistedState, KeepsTermVoteAndLog) {  // §5.1 Figure 2
  Cluster c;
  c.Bootstrap({1, 2, 3});
  ElectOne(c);
  ASSERT_TRUE(c.raw(1).Propose("x").ok());
  c.Stabilize();
  c.Restart(2);
  EXPECT_EQ(c.raft(2).term(), 2u);
  EXPECT_EQ(c.raft(2).vote(), 1u);
  EXPECT_EQ(c.raft(2).raft_log().LastIndex(), 5u);
  c.Stabilize();
  EXPECT_EQ(c.node(2).applied.size(), 1u);  // re-applied after restart
}

TEST(Step_Malformed, RejectsLocalTypesAndUnknownResponders) {
  Cluster c;
  c.Bootstrap({1, 2, 3});
  EXPECT_FALSE(c.raw(1).Step(Msg(MessageType::kHup, 2, 1, 0)).ok());
  EXPECT_FALSE(c.raw(1).Step(Msg(MessageType::kAppResp, 9, 1, 5)).ok());
  EXPECT_FALSE(c.raw(1).Step(Msg(MessageType::kApp, 2, 1, 0)).ok());
  EXPECT_FALSE(c.raw(1).Step(Msg(MessageType::kApp, 2, 7, 3)).ok());
}

TEST(GetReady_Twice, AbortsWithoutAdvance) {
  Cluster c;
  c.Bootstrap({1, 2, 3});
  ASSERT_TRUE(c.raw(1).HasReady());
  Ready rd = c.raw(1).GetReady();
  EXPECT_FALSE(c.raw(1).HasReady());
  EXPECT_DEATH(c.raw(1).GetReady(), "GetReady called before Advance");
  c.raw(1).Advance(rd);
}

TEST(Ready_Ordering, VoteResponsesWaitForHardState) {  // §5.1
  Cluster c;
  c.Bootstrap({1, 2, 3});
  c.Stabilize();
  c.Tick(2, 30);
  Message m = Msg(MessageType::kVote, 1, 2, 5);
  m.index = 10;
  m.log_term = 4;
  ASSERT_TRUE(c.raw(2).Step(m).ok());
  Ready rd = c.raw(2).GetReady();
  EXPECT_TRUE(rd.term_or_vote_changed);
  EXPECT_EQ(rd.hard_state.vote, 1u);
  ASSERT_FALSE(rd.messages.empty());
  for (const Message& out : rd.messages) {
    EXPECT_FALSE(MaySendBeforePersisting(rd, out));
  }
  c.raw(2).Advance(rd);
}

TEST(Step_VoteResponse, CommitHintAdvancesMatchingLog) {
  // Log matching (§5.3): a responder's committed prefix is ours if our entry
  // at the hinted index has the hinted term. Lets a voter of a new config
  // that missed the commit of the change learn it while campaigning.
  Cluster c;
  c.Bootstrap({1, 2, 3});
  ElectOne(c);
  ASSERT_TRUE(c.raw(1).Propose("x").ok());
  ASSERT_TRUE(c.ProcessReady(1));
  c.Deliver();  // 2 and 3 append index 5
  c.ProcessReady(2);
  c.ProcessReady(3);
  c.Deliver(1);  // 1 commits 5
  c.DropPending();
  ASSERT_EQ(c.raft(3).raft_log().committed(), 4u);
  Message m = Msg(MessageType::kPreVoteResp, 1, 3, 2);
  m.reject = true;
  m.commit = 5;
  m.log_term = 2;
  ASSERT_TRUE(c.raw(3).Step(m).ok());
  EXPECT_EQ(c.raft(3).raft_log().committed(), 5u);
  // A hint whose term does not match our entry is ignored.
  m.commit = 5;
  m.log_term = 7;
  Cluster d;
  d.Bootstrap({1, 2, 3});
  d.Stabilize();
  ASSERT_TRUE(d.raw(3).Step(m).ok());
  EXPECT_EQ(d.raft(3).raft_log().committed(), 3u);
}

TEST(Step_StaleVote, CandidateLearnsNewerTerm) {  // §5.1
  Cluster c([](Config* cfg) { cfg->pre_vote = false; });
  c.Bootstrap({1, 2, 3});
  ElectOne(c);
  Message m = Msg(MessageType::kVote, 3, 2, 1);
  m.index = 3;
  m.log_term = 1;
  ASSERT_TRUE(c.raw(2).Step(m).ok());
  ASSERT_TRUE(c.ProcessReady(2));
  ASSERT_FALSE(c.queue().empty());
  const Message& resp = c.queue().back();
  EXPECT_EQ(resp.type, MessageType::kVoteResp);
  EXPECT_TRUE(resp.reject);
  EXPECT_EQ(resp.term, 2u);
}

}  // namespace
}  // namespace lockd::raft
