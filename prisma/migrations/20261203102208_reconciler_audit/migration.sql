-- The reconciler's leader row (fencing epoch) and the audit trail (issue 5).
CREATE TABLE "reconciler_leader" (
    "id" INTEGER NOT NULL DEFAULT 1,
    "epoch" BIGINT NOT NULL DEFAULT 0,
    "leader" TEXT,
    "last_round_at" TIMESTAMP(3),
    "updated_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "reconciler_leader_pkey" PRIMARY KEY ("id")
);

INSERT INTO "reconciler_leader" ("id") VALUES (1);

CREATE TABLE "audit_events" (
    "id" BIGSERIAL NOT NULL,
    "at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "actor" TEXT NOT NULL,
    "kind" TEXT NOT NULL,
    "action" TEXT NOT NULL,
    "outcome" TEXT NOT NULL DEFAULT 'observed',
    "subject_type" TEXT NOT NULL,
    "subject_id" TEXT NOT NULL,
    "team_id" TEXT,
    "reason" TEXT NOT NULL,
    "data" JSONB NOT NULL DEFAULT '{}',
    "epoch" BIGINT NOT NULL DEFAULT 0,

    CONSTRAINT "audit_events_pkey" PRIMARY KEY ("id")
);

CREATE INDEX "audit_events_subject_id_id_idx" ON "audit_events"("subject_id", "id");
CREATE INDEX "audit_events_team_id_id_idx" ON "audit_events"("team_id", "id");
CREATE INDEX "audit_events_kind_id_idx" ON "audit_events"("kind", "id");
