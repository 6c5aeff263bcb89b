-- Service membership, restart policy and health check of a workload (issue 5).
ALTER TABLE "workloads" ADD COLUMN "service_id" TEXT,
ADD COLUMN "component_name" TEXT,
ADD COLUMN "service_version" INTEGER,
ADD COLUMN "instance_index" INTEGER,
ADD COLUMN "restart_policy" JSONB NOT NULL DEFAULT '{}',
ADD COLUMN "restarts" INTEGER NOT NULL DEFAULT 0,
ADD COLUMN "health_check" JSONB;

-- CreateIndex
CREATE INDEX "workloads_service_id_component_name_idx" ON "workloads"("service_id", "component_name");
